"""The SageMaker endpoint's costs: measured call seconds priced per image, and the seconds an
image is expected to take (the endpoint's own measurements, else a reference figure from
data/sagemaker_throughput.json) for estimates and budget holds."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict

from imagebatch.costs.prices import InstancePrice
from imagebatch.models.money import ceil_micro, round_micro
from imagebatch.models.records import ImageJob, ImageOutcome
from imagebatch.models.sagemaker_contract import InvocationResult, shape_key

_KEY = re.compile(r"^(\d+)x(\d+)/(\d+)/(cfg|nocfg)$")


def call_totals(result: InvocationResult, price: InstancePrice) -> dict[int, int]:
    """Micro-dollars per pipeline call: its measured seconds x the price, rounded once."""
    per_second = price.micro_usd_per_second
    return {
        call.call: round_micro(Decimal(str(call.seconds)) * per_second) for call in result.calls
    }


@dataclass(frozen=True)
class PricedResult:
    """A request's instance time split into what its new image records carry and the rest.

    `rework_micro_usd` is instance time no new record carries: calls whose images the request
    did not answer for (a call that failed or was stopped) and images another attempt already
    recorded (a late or duplicate request). Together they are every call's cost, exactly.
    """

    outcomes: list[ImageOutcome]
    rework_micro_usd: int
    total_micro_usd: int


# Kept whole: a call's rounding and the split of its remainder over its images must add up
# exactly; apart, the two halves could disagree by a micro-dollar.
def price_result(
    result: InvocationResult,
    jobs: list[ImageJob],
    price: InstancePrice,
    *,
    recorded: Collection[str] = (),
    model_label: str = "sagemaker",
) -> PricedResult:
    """Ledger outcomes for the images the container answered for that are not recorded yet.

    Each call is rounded once and its integer cost split over the images it answered for (the
    first images take the remainder), so a call's images add up to exactly the call's cost;
    a failed image that ran in a call carries its share too (its seconds were used).
    """
    by_id = {job.image_id: job for job in jobs}
    totals = call_totals(result, price)
    members: dict[int, list[str]] = {}
    for image in result.images:
        if image.image_id not in by_id:
            raise ValueError(f"the endpoint answered for {image.image_id}, not in this chunk")
        if image.call is not None and image.call in totals:
            members.setdefault(image.call, []).append(image.image_id)
    costs: dict[str, int] = {}
    for call, total in totals.items():
        ids = members.get(call, [])
        if not ids:
            continue
        share, remainder = divmod(total, len(ids))
        for index, image_id in enumerate(ids):
            costs[image_id] = share + (1 if index < remainder else 0)
    source = (
        f"{price.instance_type} ${price.usd_per_hour}/h x measured inference seconds; "
        f"{price.source} (retrieved {price.retrieved.isoformat()})"
    )
    outcomes = []
    for image in result.images:
        if image.image_id in recorded:
            continue
        job = by_id[image.image_id]
        cost = costs.get(job.image_id, 0)
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
                cost_micro_usd=cost,
                price_source=source if cost else None,
                output_key=image.key,
                failure_class=image.failure_class,
                failure_reason=image.failure_reason,
                inference_ms=(
                    round(image.inference_seconds * 1000) if image.call is not None else None
                ),
            )
        )
    total = sum(totals.values())
    return PricedResult(
        outcomes=outcomes,
        rework_micro_usd=total - sum(o.cost_micro_usd for o in outcomes),
        total_micro_usd=total,
    )


def price_outcomes(
    result: InvocationResult, jobs: list[ImageJob], price: InstancePrice, model_label: str
) -> list[ImageOutcome]:
    """Ledger outcomes for every image the container answered for (none recorded yet)."""
    return price_result(result, jobs, price, model_label=model_label).outcomes


# --- expected seconds ------------------------------------------------------------------------


class InstanceThroughput(BaseModel):
    """A reference figure: seconds per image of one model at one shape on one instance type."""

    model_config = ConfigDict(frozen=True)
    instance_type: str | None
    model: str
    model_ids: tuple[str, ...] = ()
    width: int
    height: int
    steps: int
    cfg: bool = True
    seconds_per_image: Decimal
    # The part of an image's time that does not grow with steps (0 where not measured).
    fixed_seconds_per_image: Decimal = Decimal(0)
    source: str
    retrieved: date

    def applies_to(self, instance_type: str, model: str) -> bool:
        return (self.instance_type in {None, instance_type}) and (
            not self.model_ids or model in self.model_ids
        )

    def seconds_for(self, key: str) -> Decimal:
        """Scaled linearly by pixels, and by steps past the fixed part; guidance on/off
        doubles/halves the per-step (UNet) part."""
        width, height, steps, cfg = parse_shape_key(key)
        scale = Decimal(width * height) / Decimal(self.width * self.height)
        per_step = (self.seconds_per_image - self.fixed_seconds_per_image) / self.steps
        if cfg and not self.cfg:
            per_step *= 2
        elif self.cfg and not cfg:
            per_step /= 2
        return (self.fixed_seconds_per_image + per_step * steps) * scale


def parse_shape_key(key: str) -> tuple[int, int, int, bool]:
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not a shape key (WIDTHxHEIGHT/STEPS/cfg|nocfg)")
    return int(match[1]), int(match[2]), int(match[3]), match[4] == "cfg"


@lru_cache(maxsize=1)
def load_instance_throughput() -> tuple[InstanceThroughput, ...]:
    text = resources.files("imagebatch.data").joinpath("sagemaker_throughput.json").read_text()
    return tuple(InstanceThroughput.model_validate(e) for e in json.loads(text)["instances"])


def reference_throughput(instance_type: str, model: str) -> InstanceThroughput:
    """The data file's figure for this model on this instance type: one naming the model
    first (on this instance type, then on any), else the instance type's reference model."""
    entries = [e for e in load_instance_throughput() if e.applies_to(instance_type, model)]
    entries.sort(key=lambda e: (not e.model_ids, e.instance_type is None))
    if not entries:
        raise KeyError(f"no throughput recorded for {model or 'any model'} on {instance_type}")
    return entries[0]


class Measured(BaseModel):
    """What the endpoint measured at one shape: total call seconds over images made."""

    model_config = ConfigDict(frozen=True)
    seconds: Decimal
    images: int

    @property
    def seconds_per_image(self) -> Decimal:
        return self.seconds / self.images


class ExpectedSeconds(BaseModel):
    """Seconds per image by shape key, and where each figure came from."""

    model_config = ConfigDict(frozen=True)
    per_image: dict[str, Decimal]
    sources: dict[str, str]

    def for_job(self, job: ImageJob) -> Decimal:
        return self.per_image[shape_key(job)]


def expected_seconds(
    keys: Collection[str],
    *,
    instance_type: str,
    model: str,
    measured: Mapping[str, Measured],
) -> ExpectedSeconds:
    """The endpoint's own mean where it has measured the shape; else the reference figure."""
    per_image: dict[str, Decimal] = {}
    sources: dict[str, str] = {}
    reference: InstanceThroughput | None = None
    for key in keys:
        seen = measured.get(key)
        if seen is not None and seen.images > 0:
            per_image[key] = seen.seconds_per_image
            sources[key] = f"measured on this endpoint ({seen.images} images at {key})"
            continue
        reference = reference or reference_throughput(instance_type, model)
        per_image[key] = reference.seconds_for(key)
        sources[key] = (
            f"{reference.model} at {reference.width}x{reference.height}/{reference.steps} "
            f"steps, scaled: {reference.source} ({reference.retrieved})"
        )
    return ExpectedSeconds(per_image=per_image, sources=sources)


def estimate_micro_usd(
    width: int,
    height: int,
    steps: int | None,
    price: InstancePrice,
    *,
    default_steps: int = 30,
    model: str = "",
    cfg: bool = True,
) -> int:
    """An image's expected cost from the reference figure alone (no measurements): the CLI's
    `estimate` before anything ran. Rounded up: an estimate guards a budget."""
    key = f"{width}x{height}/{steps or default_steps}/{'cfg' if cfg else 'nocfg'}"
    seconds = reference_throughput(price.instance_type, model).seconds_for(key)
    return ceil_micro(seconds * price.micro_usd_per_second)
