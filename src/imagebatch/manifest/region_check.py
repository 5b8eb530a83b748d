"""A manifest's items against the stack's region: Bedrock serves each model in some regions.

The catalogue records them (ModelSpec.availability, data/bedrock_models.json). An item whose
model the region does not serve would fail on AWS image by image; it is a line error instead,
naming the regions that serve the model, in `imagebatch validate --region` and in ingest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from imagebatch.manifest.schema import FieldError, InvalidLine, ValidItem
from imagebatch.models.bedrock_models import ModelCatalogue


def check_region(
    entry: ValidItem | InvalidLine, catalogue: ModelCatalogue, region: str
) -> ValidItem | InvalidLine:
    if isinstance(entry, InvalidLine):
        return entry
    spec = catalogue.get(entry.item.model)
    reason = spec.region_error(region) if spec is not None else None
    if reason is None:
        return entry
    error = FieldError(line=entry.line, field="model", reason=reason, item_id=entry.item.id)
    return InvalidLine(line=entry.line, errors=[error])


def check_regions(
    entries: Iterable[ValidItem | InvalidLine], catalogue: ModelCatalogue, region: str
) -> Iterator[ValidItem | InvalidLine]:
    for entry in entries:
        yield check_region(entry, catalogue, region)
