"""Arguments more than one command takes, declared once so their help reads the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ManifestArgument = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]
TemplateOption = Annotated[Path, typer.Option(exists=True)]
