"""Arguments more than one command takes, declared once so their help reads the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ManifestArgument = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]
TemplateOption = Annotated[Path, typer.Option(exists=True)]


def default_region() -> str | None:
    """The region ./samconfig.toml deploys the stack to, else AWS_REGION/AWS_DEFAULT_REGION."""
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
    return None
