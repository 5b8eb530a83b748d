"""The imagebatch command line: the typer app and its commands, wired (commands/ does the work).

Command modules import only what their signatures need; torch, moto and boto3 load inside
the commands that use them, so `imagebatch validate` starts fast. Every command is wrapped by
`exit_codes.guarded`: an error is one line on stderr and a documented exit code.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Annotated, Any

import typer

from imagebatch_cli.commands import (
    check,
    deployed,
    doctor,
    endpoint,
    estimate,
    local,
    local_up,
    models,
    prices,
    query,
    redrive,
    redrive_ingest,
    validate,
)
from imagebatch_cli.exit_codes import guarded
from imagebatch_cli.settings import set_global_options

CONTEXT = {"help_option_names": ["-h", "--help"]}
# Plain usage errors: one `Error: Invalid value for '--x': ...` line, never a box cut to 80
# columns, so a script or `grep` sees the whole message.

app = typer.Typer(
    help="Batch image generation on AWS, priced per image.\n\nExit codes: 0 done, 1 error, "
    "2 usage, 3 batch PARTIAL, 4 batch FAILED, 5 batch REJECTED (docs/cli.md).",
    no_args_is_help=True,
    context_settings=CONTEXT,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
local_app = typer.Typer(
    help="Run the pipeline on this machine: no AWS account needed.",
    no_args_is_help=True,
    context_settings=CONTEXT,
    rich_markup_mode=None,
)
app.add_typer(local_app, name="local")
endpoint_app = typer.Typer(
    help="The self-hosted SageMaker endpoint: compile a model for it (docs/sagemaker.md).",
    no_args_is_help=True,
    context_settings=CONTEXT,
    rich_markup_mode=None,
)
app.add_typer(endpoint_app, name="endpoint")
prices_app = typer.Typer(
    help="The AWS prices imagebatch counts cost with (src/imagebatch/data): read them again.",
    no_args_is_help=True,
    context_settings=CONTEXT,
    rich_markup_mode=None,
)
app.add_typer(prices_app, name="prices")


def version() -> str:
    try:
        return metadata.version("imagebatch")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"imagebatch {version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    profile: Annotated[
        str | None,
        typer.Option(
            envvar="AWS_PROFILE",
            show_default=False,
            help="AWS profile for commands that talk to AWS (default: AWS_PROFILE).",
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="AWS region for commands that talk to AWS (default: AWS_REGION, the profile's).",
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The options every command shares."""
    set_global_options(profile, region)


def _command(target: typer.Typer, name: str | None = None) -> Callable[[Any], Any]:
    def register(function: Any) -> Any:
        return target.command(name)(guarded(function))

    return register


_command(app)(validate.validate)
_command(app)(estimate.estimate)
_command(local_app, "run")(local.local_run)
_command(local_app, "catalog")(local.local_catalog)
_command(local_app, "check")(check.local_check)
_command(app)(check.check)
_command(local_app, "up")(local_up.local_up)
_command(app)(query.batches)
_command(app)(query.costs)
_command(app)(query.cost)
_command(app)(models.models)
_command(app)(redrive.redrive)
_command(app, "redrive-ingest")(redrive_ingest.redrive_ingest)
_command(app)(deployed.submit)
_command(app)(deployed.watch)
_command(app, "stack")(deployed.stack_outputs)
_command(app)(doctor.doctor)
_command(endpoint_app, "compile")(endpoint.compile_model)
_command(prices_app, "refresh")(prices.refresh)


def main() -> None:
    """The `imagebatch` entry point: the app, and one line for anything that escapes it."""
    import sys

    from imagebatch_cli.exit_codes import describe

    try:
        app(prog_name="imagebatch")
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        known = describe(exc)
        message, code = known or (f"unexpected error: {type(exc).__name__}: {exc}", 1)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
