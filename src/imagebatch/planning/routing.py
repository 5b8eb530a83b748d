"""One manifest item on its way into a plan: its route (the rule is backends/routing.py;
this module applies it with what the stack deployed and the region), and its images, each
with a stable seed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from imagebatch.backends.routing import Deployment, Route, route_item
from imagebatch.manifest.region_check import check_region
from imagebatch.manifest.schema import BatchSettings, InvalidLine, ManifestItem, ValidItem
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.records import ImageJob, hashed_seed

SEED_MAX = 4_294_967_294


def seed_for(item: ManifestItem, index: int) -> int:
    """A stable seed per image, so a retried or redriven image is the same image."""
    if item.seed is not None:
        return item.seed + index - 1 if item.seed + index - 1 <= SEED_MAX else index
    # Derived seeds are mapped into each model's own range when the request is built
    # (backends.bedrock.model_seed), so the widest range is used here.
    return hashed_seed(item.id, str(index), item.prompt, maximum=SEED_MAX)


def expand_item(
    item: ManifestItem, line: int, batch_tags: dict[str, str], *, reuse: bool = True
) -> Iterator[ImageJob]:
    """The item's images; `reuse` is the batch's, which the item's own `reuse` overrides."""
    for index in range(1, item.count + 1):
        yield ImageJob(
            image_id=f"{item.id}-{index}",
            item_id=item.id,
            index=index,
            line=line,
            prompt=item.prompt,
            negative_prompt=item.negative_prompt,
            width=item.width,
            height=item.height,
            seed=seed_for(item, index),
            steps=item.steps,
            guidance=item.guidance,
            model=item.model,
            tags={**batch_tags, **item.tags},
            reuse=item.reuse if item.reuse is not None else reuse,
        )


def route_entry(  # noqa: PLR0917 - one caller, plan_batch, which passes them in this order
    entry: ValidItem,
    settings: BatchSettings,
    catalogue: ModelCatalogue,
    deployment: Deployment | None,
    today: date,
    region: str | None,
) -> Route | InvalidLine:
    routed: Route
    if deployment is None:
        if settings.backend == "sagemaker":
            return "sagemaker"  # refused as a whole: the backend is not deployed
        routed = "bedrock"  # the reader checked the item against its Bedrock model
    else:
        found = route_item(
            entry.item,
            entry.line,
            settings.backend,
            catalogue=catalogue,
            deployment=deployment,
            today=today,
        )
        if isinstance(found, list):
            return InvalidLine(line=entry.line, errors=found)
        routed = found
    if routed == "bedrock" and region is not None:
        # Bedrock serves each model in some regions only (data/bedrock_models.json)
        checked = check_region(entry, catalogue, region)
        if isinstance(checked, InvalidLine):
            return checked
    return routed
