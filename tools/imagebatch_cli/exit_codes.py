"""How an imagebatch command ends: its exit code, and one line instead of a traceback.

    0  done; a batch: every image made
    1  the command could not do its work (AWS unreachable, no credentials, no such batch,
       invalid manifest lines); the line on stderr says why
    2  usage: an option or argument the command does not take (click's own code)
    3  the batch ended PARTIAL: some images made, some failed (`imagebatch redrive`)
    4  the batch ended FAILED: no image made
    5  the batch was REJECTED before anything was spent (invalid lines, over budget)
  130  interrupted (Ctrl-C)

Every command is wrapped by `guarded`: an error the CLI expects prints one line on stderr and
exits with its code; anything else prints one line naming the error (IMAGEBATCH_DEBUG=1 shows
the traceback) and exits 1.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from enum import IntEnum
from typing import NoReturn, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    FAILED = 4
    REJECTED = 5
    INTERRUPTED = 130


_BY_STATUS = {
    "SUCCEEDED": ExitCode.OK,
    "PARTIAL": ExitCode.PARTIAL,
    "FAILED": ExitCode.FAILED,
    "REJECTED": ExitCode.REJECTED,
}


def exit_code_for_status(status: str) -> ExitCode:
    """A finished batch's status as an exit code; a batch still running is not an error."""
    return _BY_STATUS.get(status, ExitCode.OK)


class CliError(Exception):
    """An error the command expected: printed as one line, exit `code`."""

    def __init__(self, message: str, code: int = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: object, code: int = ExitCode.ERROR) -> NoReturn:
    """Stop the command with one line on stderr and `code` (the codes: above)."""
    raise CliError(str(message), code)


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(the line to print, the exit code) for an error the CLI knows how to explain."""
    from imagebatch.errors import ImageBatchError
    from imagebatch_cli.project import ProjectFilesNotFound

    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, ImageBatchError | ProjectFilesNotFound):
        return str(exc), ExitCode.ERROR
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", ExitCode.ERROR
    aws = _describe_aws(exc)
    if aws is not None:
        return aws, ExitCode.ERROR
    return None


def _describe_aws(exc: BaseException) -> str | None:
    """A botocore error as the AWS adapter words it (imported only once one happened)."""
    module = type(exc).__module__
    if not module.startswith(("botocore", "boto3")):
        return None
    from imagebatch.aws.session import explain_aws_error

    return str(explain_aws_error(exc))


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """The command, with its errors turned into one line and an exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        from imagebatch_cli.views.console import bind_consoles, err_console

        bind_consoles()
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own: usage errors (exit 2) and exits
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False, highlight=False)
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as exc:
            if os.environ.get("IMAGEBATCH_DEBUG"):
                raise
            known = describe(exc)
            message, code = known or (
                f"unexpected error: {type(exc).__name__}: {exc} "
                "(IMAGEBATCH_DEBUG=1 shows the traceback)",
                ExitCode.ERROR,
            )
            err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return run
