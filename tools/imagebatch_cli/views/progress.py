"""The progress bar `local run` and `local catalog` show while a batch runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn


@contextmanager
def image_progress(console: Console) -> Iterator[Callable[[int, int], None]]:
    """A bar of images done out of the batch's total; yields the (done, total) callback
    `LocalAws.wait_for_batch` reports to. The total is unknown until ingest has counted."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("images", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)
