"""The CLI's two consoles, and how a command stops on an error a person must read."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: object, code: int = 1) -> NoReturn:
    """Print `message` in red on stderr and exit with `code` (1: the command failed)."""
    err_console.print(f"[red]{message}[/red]")
    raise typer.Exit(code)
