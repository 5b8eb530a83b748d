"""A what-if for a whole manifest: every backend it allows, priced, the cheapest within the
deadline picked. `imagebatch estimate` prints it under ingest's own answer for the stack;
its view (views/estimate.py) reads the result, so it stands below both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagebatch.costs.estimate import (
    BackendOption,
    Shape,
    bedrock_options,
    choose_backend,
    load_speed_assumptions,
    sagemaker_options,
)
from imagebatch.costs.prices import RegionPrices
from imagebatch.manifest.checks import check_item_for_model
from imagebatch.manifest.reader import ManifestReader, format_for_key
from imagebatch.manifest.schema import ValidItem
from imagebatch.models.bedrock_models import ModelCatalogue

DEFAULT_INSTANCES = ("ml.inf2.xlarge", "ml.g4dn.xlarge")


@dataclass
class ManifestScan:
    """One pass over the manifest: what it asks for."""

    backend: str
    images: int = 0
    invalid_lines: int = 0
    models: set[str] = field(default_factory=set)
    compatible: list[str] = field(default_factory=list)


@dataclass
class ManifestEstimate:
    images: int
    invalid_lines: int
    options: list[BackendOption]
    chosen: BackendOption | None
    deadline_s: float | None
    backend: str = "auto"
    alternatives: list[str] = field(default_factory=list)


def scan_manifest(path: Path, catalogue: ModelCatalogue) -> ManifestScan:
    """Images, invalid lines, the models the lines name, and the Bedrock models that could
    make every valid item as written."""
    with path.open("rb") as stream:
        reader = ManifestReader(stream, format_for_key(path.name), catalogue)
        scan = ManifestScan(backend=reader.settings.backend)
        fits = {spec.model_id: True for spec in catalogue.models}
        for entry in reader:
            if not isinstance(entry, ValidItem):
                scan.invalid_lines += 1
                continue
            scan.images += entry.item.count
            scan.models.add(entry.item.model)
            for spec in catalogue.models:
                if fits[spec.model_id] and check_item_for_model(entry.item, spec, line=entry.line):
                    fits[spec.model_id] = False
    scan.compatible = [model for model, ok in fits.items() if ok]
    return scan


def estimate_manifest(
    path: Path,
    *,
    catalogue: ModelCatalogue,
    prices: RegionPrices,
    shape: Shape,
    instance_types: list[str],
    deadline_s: float | None = None,
) -> ManifestEstimate:
    scan = scan_manifest(path, catalogue)
    options: list[BackendOption] = []
    if scan.backend in {"bedrock", "auto"}:
        options += bedrock_options(sorted(scan.models), catalogue, prices, shape)
    if scan.backend in {"sagemaker", "auto"}:
        options += sagemaker_options(instance_types, prices, shape)
    return ManifestEstimate(
        images=scan.images,
        invalid_lines=scan.invalid_lines,
        options=options,
        chosen=choose_backend(options, scan.images, deadline_s),
        deadline_s=deadline_s,
        backend=scan.backend,
        alternatives=[m for m in scan.compatible if m not in scan.models]
        if scan.backend != "sagemaker"
        else [],
    )


def known_instance_types(prices: RegionPrices) -> list[str]:
    """Instance types with both a price in this region and a measured speed."""
    priced = {price.instance_type for price in prices.sagemaker_instances}
    return [
        s.instance_type for s in load_speed_assumptions().sagemaker if s.instance_type in priced
    ]
