"""The CLI's two consoles (how a command stops on an error: exit_codes.fail).

Output that is not a terminal (a pipe, a file, `grep`) is never cut or wrapped to a width:
a batch id, a model id or a `file:line: field: reason` line stays whole on its line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console, ConsoleDimensions

# Wide enough for any line the CLI prints; tables are not expanded to it, only never cut.
UNLIMITED_WIDTH = 100_000


class _Console(Console):
    """A rich console that is as wide as its terminal, and unlimited when it writes elsewhere."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(UNLIMITED_WIDTH, 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self.width, self.height = new_size


console = _Console()
err_console = _Console(stderr=True)


def bind_consoles() -> None:
    """Point both consoles at the streams this command writes to: a command's own lines go
    where it was asked to write them even while the local Lambdas' output is redirected."""
    console.file = sys.stdout
    err_console.file = sys.stderr


def say(text: str, *, err: bool = False) -> None:
    """One plain line: no markup or highlighting, so text from a manifest prints as it is."""
    (err_console if err else console).print(text, markup=False, highlight=False, soft_wrap=True)


def emit_json(value: BaseModel | dict[str, Any] | list[Any]) -> None:
    """The --json output: one JSON document on stdout, nothing else there."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
