"""`imagebatch validate MANIFEST`: the manifest checked offline, exactly as ingest checks it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import validate_manifest_file
from imagebatch.manifest.schema import FieldError
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch_cli.commands._args import ManifestArgument, SampleOption, manifest_path
from imagebatch_cli.views.console import console, err_console, fail


def validate(
    manifest: ManifestArgument = None,
    sample: SampleOption = None,
    shape_buckets: Annotated[
        str | None,
        typer.Option(help="The SageMaker endpoint's sizes (e.g. 512x512,768x768), as deployed."),
    ] = None,
) -> None:
    """Validate a manifest offline, exactly as ingest will; exit 1 if any line is invalid."""
    manifest = manifest_path(manifest, sample)
    try:
        settings, valid, errors = validate_manifest_file(manifest, load_catalogue())
        if shape_buckets is not None and settings.backend == "sagemaker":
            bucket_errors = _shape_bucket_errors(manifest, shape_buckets)
            valid -= len(bucket_errors)
            errors = sorted([*errors, *bucket_errors], key=lambda error: error.line)
    except ManifestError as exc:
        fail(f"{manifest}: {exc}")
    for error in errors:
        item = f" (id {error.item_id})" if error.item_id else ""
        err_console.print(f"{manifest}:{error.line}: {error.field}{item}: {error.reason}")
    lines = len({error.line for error in errors})
    console.print(
        f"{valid} valid item(s), {lines} invalid line(s); backend {settings.backend}, "
        f"on_invalid {settings.on_invalid}"
    )
    if errors:
        raise typer.Exit(1)


def _shape_bucket_errors(manifest: Path, shape_buckets: str) -> list[FieldError]:
    """Sizes the endpoint was not compiled for, as ingest reports them."""
    from imagebatch.manifest.reader import ManifestReader, format_for_key
    from imagebatch.manifest.schema import ValidItem
    from imagebatch.models.sagemaker_contract import bucket_error, parse_buckets

    buckets = parse_buckets(shape_buckets)
    found = []
    with manifest.open("rb") as stream:
        for entry in ManifestReader(stream, format_for_key(manifest.name), load_catalogue()):
            if not isinstance(entry, ValidItem):
                continue
            reason = bucket_error(entry.item.width, entry.item.height, buckets)
            if reason is not None:
                found.append(
                    FieldError(line=entry.line, field="width", reason=reason, item_id=entry.item.id)
                )
    return found
