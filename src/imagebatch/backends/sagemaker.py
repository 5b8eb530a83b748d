"""The SageMaker endpoint's costs: measured call seconds priced per image, and estimates from
the instance's recorded throughput (data/sagemaker_throughput.json)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict

from imagebatch.costs.prices import InstancePrice
from imagebatch.models.money import ceil_micro, round_micro
from imagebatch.models.records import ImageJob, ImageOutcome
from imagebatch.models.sagemaker_contract import InvocationResult


def call_costs(result: InvocationResult, price: InstancePrice) -> dict[str, int]:
    """Micro-dollars per succeeded image: its call's seconds x the instance price per second.

    Each call is rounded once and its integer cost split over the call's images (the first
    images take the remainder), so the images of a call add up to exactly the call's cost.
    """
    per_second = price.micro_usd_per_second
    members: dict[int, list[str]] = {}
    for image in result.images:
        if image.status == "SUCCEEDED" and image.call is not None:
            members.setdefault(image.call, []).append(image.image_id)
    costs: dict[str, int] = {}
    for call in result.calls:
        ids = members.get(call.call, [])
        if not ids:
            continue
        total = round_micro(Decimal(str(call.seconds)) * per_second)
        share, remainder = divmod(total, len(ids))
        for index, image_id in enumerate(ids):
            costs[image_id] = share + (1 if index < remainder else 0)
    return costs


def price_outcomes(
    result: InvocationResult, jobs: list[ImageJob], price: InstancePrice, model_label: str
) -> list[ImageOutcome]:
    """Ledger outcomes for the images the container answered for (succeeded or failed)."""
    by_id = {job.image_id: job for job in jobs}
    costs = call_costs(result, price)
    source = (
        f"{price.instance_type} ${price.usd_per_hour}/h x measured inference seconds; "
        f"{price.source} (retrieved {price.retrieved.isoformat()})"
    )
    outcomes = []
    for image in result.images:
        job = by_id.get(image.image_id)
        if job is None:
            raise ValueError(f"the endpoint answered for {image.image_id}, not in this chunk")
        outcomes.append(
            ImageOutcome(
                image_id=job.image_id,
                item_id=job.item_id,
                chunk_id=result.chunk_id,
                status=image.status,
                model=job.model or model_label,
                backend="sagemaker",
                seed=image.seed,
                prompt_sha256=job.prompt_sha256,
                cost_micro_usd=costs.get(job.image_id, 0),
                price_source=source if image.status == "SUCCEEDED" else None,
                output_key=image.key,
                failure_class=image.failure_class,
                failure_reason=image.failure_reason,
                inference_ms=(
                    round(image.inference_seconds * 1000) if image.status == "SUCCEEDED" else None
                ),
            )
        )
    return outcomes


class InstanceThroughput(BaseModel):
    model_config = ConfigDict(frozen=True)
    instance_type: str
    model: str
    width: int
    height: int
    steps: int
    seconds_per_image: Decimal
    source: str
    retrieved: date


@lru_cache(maxsize=1)
def load_instance_throughput() -> dict[str, InstanceThroughput]:
    text = resources.files("imagebatch.data").joinpath("sagemaker_throughput.json").read_text()
    entries = json.loads(text)["instances"]
    return {e["instance_type"]: InstanceThroughput.model_validate(e) for e in entries}


def estimate_micro_usd(
    width: int, height: int, steps: int | None, price: InstancePrice, *, default_steps: int = 30
) -> int:
    """An image's expected cost before it runs: the reference seconds scaled by pixels and
    steps, x the price per second. Budgets use it; the ledger charges measured seconds."""
    reference = load_instance_throughput().get(price.instance_type)
    if reference is None:
        raise KeyError(f"no throughput recorded for {price.instance_type}")
    scale = Decimal(width * height) / Decimal(reference.width * reference.height)
    seconds = (
        reference.seconds_per_image
        * scale
        * Decimal(steps or default_steps)
        / Decimal(reference.steps)
    )
    # Rounded up: an estimate guards a budget, so it errs on the side of refusing.
    return ceil_micro(seconds * price.micro_usd_per_second)
