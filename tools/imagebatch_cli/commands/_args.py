"""Arguments more than one command takes, declared once so their help reads the same."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imagebatch_cli.exit_codes import fail
from imagebatch_cli.project import ProjectFilesNotFound, sample_manifest, template_path

if TYPE_CHECKING:
    from imagebatch.planning.stack_options import DeployedOptions

ManifestArgument = Annotated[
    Path | None,
    typer.Argument(
        exists=True,
        dir_okay=False,
        readable=True,
        show_default=False,
        help="The manifest (JSON Lines or CSV); or name a packaged one with --sample.",
    ),
]
SampleOption = Annotated[
    str | None,
    typer.Option(
        help="Use a sample manifest shipped with imagebatch instead: demo (JSON Lines) or "
        "demo.csv.",
        show_default=False,
    ),
]
TemplateOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        show_default=False,
        help="The SAM template to run; default: the application imagebatch is installed from.",
    ),
]


ParametersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--parameter-overrides",
        help="The template parameters the stack was deployed with, as `sam deploy` takes them "
        "(e.g. 'EnableSageMaker=true SageMakerShapeBuckets=512x512'); repeatable.",
        show_default=False,
    ),
]


def stack_for(
    template: Path | None,
    parameter_overrides: list[str] | None,
    region: str,
    extra: dict[str, str] | None = None,
) -> DeployedOptions:
    """The stack ingest would run on (template_preview.py): the template (default: the
    application's own) with the deployed parameters; a bad parameter exits 2."""
    from imagebatch_local.template import TemplateError

    from imagebatch_cli.template_preview import (
        StackParametersError,
        parse_parameter_overrides,
        stack_options,
    )

    try:
        parameters = parse_parameter_overrides(parameter_overrides or []) | (extra or {})
        return stack_options(resolved_template(template), parameters, region)
    except (StackParametersError, TemplateError, KeyError, ValueError) as exc:
        fail(exc, code=2)


def manifest_path(manifest: Path | None, sample: str | None) -> Path:
    """MANIFEST as given, or the packaged sample named by --sample (exactly one of them)."""
    if (manifest is None) == (sample is None):
        fail("give a MANIFEST or --sample NAME (one of them)", code=2)
    if manifest is not None:
        return manifest
    try:
        return sample_manifest(str(sample))
    except ProjectFilesNotFound as exc:
        fail(exc, code=2)


def resolved_template(template: Path | None) -> Path:
    """--template, or the application's own template.yaml: never one from the working dir."""
    try:
        return template_path(template)
    except ProjectFilesNotFound as exc:
        fail(exc)


def default_region() -> str:
    """The region the stack is deployed to: --region wins; else ./samconfig.toml's deploy
    region; else AWS_REGION/AWS_DEFAULT_REGION; else us-west-2, where the sample config
    deploys (the default model's region)."""
    import os
    import tomllib

    config = Path("samconfig.toml")
    if config.is_file():
        parameters = tomllib.loads(config.read_text(encoding="utf-8")).get("default", {})
        region = parameters.get("deploy", {}).get("parameters", {}).get("region")
        if region:
            return str(region)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(name):
            return os.environ[name]
    return "us-west-2"
