"""The imagebatch command line: the typer app and its commands, wired (commands/ does the work).

Command modules import only what their signatures need; torch, moto and boto3 load inside
the commands that use them, so `imagebatch validate` starts fast.
"""

from __future__ import annotations

import typer

from imagebatch_cli.commands import estimate, local, models, query, redrive, validate

app = typer.Typer(help="Batch image generation on AWS, priced per image.", no_args_is_help=True)
local_app = typer.Typer(help="Run the pipeline on this machine: no AWS account needed.")
app.add_typer(local_app, name="local")

app.command()(validate.validate)
app.command()(estimate.estimate)
local_app.command("run")(local.local_run)
local_app.command("catalog")(local.local_catalog)
app.command()(query.batches)
app.command()(query.costs)
app.command()(query.cost)
app.command()(models.models)
app.command()(redrive.redrive)


if __name__ == "__main__":
    app()
