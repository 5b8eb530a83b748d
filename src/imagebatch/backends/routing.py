"""Which backend makes each item, decided before any work is planned.

`backend: bedrock` and `backend: sagemaker` send every item there; an item the chosen backend
cannot make is a line error (for sagemaker: a size outside the endpoint's shape buckets, or a
model the endpoint does not serve). `backend: auto` routes item by item:

- an item only Bedrock can make (a size outside the buckets, a Bedrock model the endpoint
  does not stand in for) goes to Bedrock; one only the endpoint can make (the endpoint's own
  model) goes to the endpoint; one neither can make is a line error naming both reasons;
- the items either could make are decided together, by cost: Bedrock's price for each image
  against the endpoint's expected seconds x its instance price, plus, when the endpoint is at
  zero and nothing else of the batch needs it, a cold start and the idle tail after the
  batch; an option expected to finish after the batch's `deadline_minutes` is not taken (the
  faster is, when neither can).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from imagebatch.costs.estimate import (
    BackendOption,
    Shape,
    bedrock_overhead_per_image,
    choose_backend,
    load_speed_assumptions,
)
from imagebatch.costs.prices import InstancePrice, RegionPrices
from imagebatch.costs.sagemaker_path import SageMakerPath, sagemaker_overhead_per_image
from imagebatch.manifest.checks import check_item_for_model
from imagebatch.manifest.schema import FieldError, ManifestItem
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.money import format_usd
from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import ShapeBucket, bucket_error

Backend = Literal["bedrock", "sagemaker"]
Route = Literal["bedrock", "sagemaker", "either"]


@dataclass(frozen=True)
class Deployment:
    """What the stack deployed on the SageMaker side (its template parameters), and whether
    the endpoint had an instance up when the batch arrived."""

    endpoint_name: str
    price: InstancePrice
    model_id: str
    buckets: tuple[ShapeBucket, ...] = ()
    # Bedrock model ids the endpoint may make instead (SageMakerBedrockEquivalents)
    stands_in_for: frozenset[str] = frozenset()
    path: SageMakerPath = field(default_factory=SageMakerPath)
    at_zero: bool = True

    @property
    def instance_type(self) -> str:
        return self.price.instance_type

    def serves(self, model: str) -> bool:
        return model == self.model_id or model in self.stands_in_for


def route_item(
    item: ManifestItem,
    line: int,
    backend: Literal["bedrock", "sagemaker", "auto"],
    *,
    catalogue: ModelCatalogue,
    deployment: Deployment | None,
    today: date,
) -> Route | list[FieldError]:
    """Where an item can go under the batch's backend, or why it cannot go anywhere."""
    if backend == "bedrock":
        return "bedrock"  # the reader checked it against its Bedrock model
    endpoint = _endpoint_errors(item, line, deployment)
    if backend == "sagemaker":
        return endpoint or "sagemaker"
    bedrock = _bedrock_errors(item, line, catalogue, today)
    if not bedrock and not endpoint:
        return "either"
    if not bedrock:
        return "bedrock"
    if not endpoint:
        return "sagemaker"
    return bedrock + endpoint


def _bedrock_errors(
    item: ManifestItem, line: int, catalogue: ModelCatalogue, today: date
) -> list[FieldError]:
    spec = catalogue.get(item.model)
    if spec is None:
        reason = f"model {item.model!r} is not a Bedrock model (known: {catalogue.model_ids[0]}…)"
        return [FieldError(line=line, field="model", reason=reason, item_id=item.id)]
    return check_item_for_model(item, spec, line=line, today=today)


def _endpoint_errors(
    item: ManifestItem, line: int, deployment: Deployment | None
) -> list[FieldError]:
    if deployment is None:
        reason = "no SageMaker endpoint is deployed in this stack"
        return [FieldError(line=line, field="model", reason=reason, item_id=item.id)]
    errors = []
    if not deployment.serves(item.model):
        reason = (
            f"model {item.model!r} is not one the SageMaker endpoint makes: it serves "
            f"{deployment.model_id!r}"
            + (
                f" (standing in for {', '.join(sorted(deployment.stands_in_for))})"
                if deployment.stands_in_for
                else ""
            )
        )
        errors.append(FieldError(line=line, field="model", reason=reason, item_id=item.id))
    reason_size = bucket_error(item.width, item.height, deployment.buckets)
    if reason_size is not None:
        errors.append(FieldError(line=line, field="width", reason=reason_size, item_id=item.id))
    return errors


@dataclass
class FlexibleImages:
    """The images either backend could make, priced both ways as they are read."""

    images: int = 0
    bedrock_micro_usd: Decimal = Decimal(0)
    endpoint_seconds: Decimal = Decimal(0)

    def add(self, bedrock_micro_usd: Decimal, endpoint_seconds: Decimal) -> None:
        self.images += 1
        self.bedrock_micro_usd += bedrock_micro_usd
        self.endpoint_seconds += endpoint_seconds


@dataclass(frozen=True)
class Choice:
    backend: Backend
    reason: str
    options: tuple[BackendOption, ...] = ()


def wake_micro_usd(deployment: Deployment) -> Decimal:
    """What a batch that needs the endpoint costs beyond its images when it is at zero: a
    cold start and the idle tail after the batch (throughput.json's stated assumptions)."""
    if not deployment.at_zero:
        return Decimal(0)
    speeds = load_speed_assumptions()
    seconds = (
        speeds.sagemaker_cold_start_seconds.seconds + speeds.sagemaker_idle_tail_seconds.seconds
    )
    return seconds * deployment.price.micro_usd_per_second


# Kept whole: both backends' costs and times computed side by side, so they are compared like
# for like.
def choose_for_flexible(
    flexible: FlexibleImages,
    *,
    deployment: Deployment,
    endpoint_needed: bool,
    prices: RegionPrices,
    shape: Shape,
    deadline_s: float | None,
    cap_micro_usd: int | None = None,
) -> Choice:
    """Bedrock or the endpoint for the images either could make.

    Both sides share the batch's own fixed costs (ingest, finalize, the contact sheet), so
    those are left out; the endpoint's cold start and idle tail count only when it is at zero
    and no other image of the batch needs it (`endpoint_needed`): otherwise they are paid
    anyway. Its wall time includes the cold start whenever the endpoint is at zero. A capped
    batch (`cap_micro_usd`) whose cap cannot cover the wake with the images never wakes the
    endpoint: the wake is held at admission, and a cap under it would refuse the batch.
    """
    n = flexible.images
    speeds = load_speed_assumptions()
    cold_then_tail = deployment.at_zero and not endpoint_needed
    # at zero, the images wait for the cold start even when other images pay for it
    cold = speeds.sagemaker_cold_start_seconds.seconds if deployment.at_zero else Decimal(0)
    per_second = deployment.price.micro_usd_per_second
    state = (
        "cold"
        if cold_then_tail
        else ("started for this batch anyway" if deployment.at_zero else "warm")
    )
    parallel = Decimal(shape.map_concurrency * shape.chunk_concurrency)
    bedrock = BackendOption(
        name="bedrock",
        backend="bedrock",
        fixed_micro_usd=Decimal(0),
        inference_per_image_micro_usd=flexible.bedrock_micro_usd / n,
        overhead_per_image_micro_usd=bedrock_overhead_per_image(prices, shape),
        fixed_seconds=Decimal(5),
        seconds_per_image=speeds.bedrock.seconds_per_image / parallel,
        source="bedrock_models.json prices; throughput.json bedrock latency",
    )
    endpoint = BackendOption(
        name=f"sagemaker {deployment.instance_type} ({state})",
        backend="sagemaker",
        instance_type=deployment.instance_type,
        warm=not cold_then_tail,
        fixed_micro_usd=wake_micro_usd(deployment) if cold_then_tail else Decimal(0),
        inference_per_image_micro_usd=flexible.endpoint_seconds / n * per_second,
        overhead_per_image_micro_usd=sagemaker_overhead_per_image(prices, shape, deployment.path),
        fixed_seconds=cold + 5,
        seconds_per_image=flexible.endpoint_seconds / n,
        source="the endpoint's measured throughput (or sagemaker_throughput.json); "
        "throughput.json cold start and idle tail",
    )
    options = (bedrock, endpoint)
    if cold_then_tail and cap_micro_usd is not None and endpoint.cost_micro_usd(n) > cap_micro_usd:
        wake = format_usd(math.ceil(endpoint.fixed_micro_usd), grouped=False)
        return Choice(
            backend="bedrock",
            reason=(
                f"bedrock: max_cost_usd {format_usd(cap_micro_usd, grouped=False)} cannot cover "
                f"waking the endpoint ({wake}: a cold start and the idle tail) with {n} images"
            ),
            options=options,
        )
    chosen = choose_backend(options, n, deadline_s)
    if chosen is None:
        chosen = min(options, key=lambda o: o.wall_seconds(n))
        reason = f"no backend finishes {n} images within the deadline; {chosen.name} is faster"
    else:
        reason = (
            f"{chosen.name}: {format_usd(chosen.cost_micro_usd(n), grouped=False)} for {n} "
            "images against "
            + ", ".join(
                f"{o.name} {format_usd(o.cost_micro_usd(n), grouped=False)}"
                for o in options
                if o is not chosen
            )
        )
    return Choice(backend=chosen.backend, reason=reason, options=options)


def job_for_backend(job: ImageJob, backend: Backend, deployment: Deployment | None) -> ImageJob:
    """The image as the chosen backend makes it: on the endpoint, its model is the endpoint's
    (records, PNG metadata and measured throughput carry what made the image)."""
    if backend == "sagemaker" and deployment is not None and job.model != deployment.model_id:
        return job.model_copy(update={"model": deployment.model_id})
    return job


EndpointSeconds = Callable[[ImageJob], Decimal]
