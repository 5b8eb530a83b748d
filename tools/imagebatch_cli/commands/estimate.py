"""`imagebatch estimate MANIFEST`: every backend that can make the manifest, priced."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from imagebatch.costs.estimate import (
    BackendOption,
    Shape,
    bedrock_options,
    choose_backend,
    sagemaker_options,
)
from imagebatch.costs.prices import RegionPrices
from imagebatch.errors import ManifestError
from imagebatch.manifest.checks import check_item_for_model
from imagebatch.manifest.reader import ManifestReader, format_for_key
from imagebatch.manifest.schema import ValidItem
from imagebatch.models.bedrock_models import ModelCatalogue, load_catalogue
from imagebatch_cli.commands._args import ManifestArgument, SampleOption, manifest_path
from imagebatch_cli.views.console import console, err_console, fail


@dataclass
class ManifestEstimate:
    images: int
    invalid_lines: int
    options: list[BackendOption]
    chosen: BackendOption | None
    deadline_s: float | None


def compatible_models(path: Path, catalogue: ModelCatalogue) -> tuple[int, int, list[str]]:
    """(images, invalid lines, Bedrock models that can make every valid item as written)."""
    images = invalid = 0
    fits = {spec.model_id: True for spec in catalogue.models}
    with path.open("rb") as stream:
        for entry in ManifestReader(stream, format_for_key(path.name), catalogue):
            if not isinstance(entry, ValidItem):
                invalid += 1
                continue
            images += entry.item.count
            for spec in catalogue.models:
                if fits[spec.model_id] and check_item_for_model(entry.item, spec, line=entry.line):
                    fits[spec.model_id] = False
    return images, invalid, [model for model, ok in fits.items() if ok]


def estimate_manifest(
    path: Path,
    *,
    catalogue: ModelCatalogue,
    prices: RegionPrices,
    shape: Shape,
    instance_types: list[str],
    deadline_s: float | None = None,
) -> ManifestEstimate:
    images, invalid, models = compatible_models(path, catalogue)
    options = bedrock_options(models, catalogue, prices, shape)
    options += sagemaker_options(instance_types, prices, shape)
    return ManifestEstimate(
        images, invalid, options, choose_backend(options, images, deadline_s), deadline_s
    )


def estimate(  # noqa: PLR0917 - typer turns each parameter into an option
    manifest: ManifestArgument = None,
    sample: SampleOption = None,
    chart: Annotated[
        Path | None, typer.Option(help="Write a PNG of cost against number of images.")
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Minutes the batch may take; auto picks within it.")
    ] = None,
    sagemaker_instance: Annotated[
        list[str] | None,
        typer.Option(help="SageMaker instance types to price (repeat); default inf2 and g4dn."),
    ] = None,
    region: Annotated[str, typer.Option(help="Prices of this region.")] = "us-east-1",
    chunk_size: Annotated[int, typer.Option(help="Images per chunk.")] = 50,
) -> None:
    """Price MANIFEST on every backend that can make it: total, per image, wall time."""
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch_cli.views.estimate import estimate_table, write_chart

    manifest = manifest_path(manifest, sample)
    instances = sagemaker_instance or ["ml.inf2.xlarge", "ml.g4dn.xlarge"]
    try:
        result = estimate_manifest(
            manifest,
            catalogue=load_catalogue(),
            prices=load_aws_prices().region(region),
            shape=Shape(chunk_size=chunk_size),
            instance_types=instances,
            deadline_s=deadline * 60 if deadline is not None else None,
        )
    except (ManifestError, KeyError) as exc:
        fail(f"{manifest}: {exc}")
    console.print(estimate_table(result))
    if result.invalid_lines:
        err_console.print(f"{result.invalid_lines} invalid line(s) left out: see `validate`")
    if result.chosen is None:
        err_console.print("[red]no backend meets the deadline[/red]")
    if chart is not None:
        points = write_chart(result, chart)
        console.print(
            f"chart: {chart}; break-even points: "
            + (", ".join(f"{a} = {b} at {n:,.0f} images" for a, b, n in points) or "none")
        )
    if result.chosen is None:
        raise typer.Exit(1)
