"""The SageMaker asynchronous backend's contract: shape buckets, the wire format, costs.

One async request carries one chunk. The Lambda side (submit_chunk, record_result) and the
serving container (containers/serving) both import these models, so the request the
submitter writes and the result the container returns have one definition.

Wire flow:
  submit_chunk writes a ChunkInvocation JSON to async-inputs/<batch>/<chunk>-<n>.json and
  calls InvokeEndpointAsync with it as InputLocation; SageMaker POSTs it to the container's
  /invocations; the container writes each PNG to the batch's output prefix and returns an
  InvocationResult, which SageMaker stores at S3OutputPath/<inference-id>.out and announces on
  the success topic (AsyncNotification); record_result prices it and answers the task token.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imagebatch.pricing import InstancePrice
from imagebatch.records import FailureClass, ImageJob, ImageOutcome

_BUCKET = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


class ShapeBucket(BaseModel):
    """One static shape the endpoint was compiled for (Neuron compiles per resolution)."""

    model_config = ConfigDict(frozen=True)
    width: int = Field(gt=0, multiple_of=8)
    height: int = Field(gt=0, multiple_of=8)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def parse_buckets(text: str) -> tuple[ShapeBucket, ...]:
    """'512x512,768x768' -> buckets; empty text means any size (the GPU/CPU container)."""
    buckets = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _BUCKET.match(part)
        if match is None:
            raise ValueError(f"shape bucket {part!r} is not WIDTHxHEIGHT (for example 512x512)")
        buckets.append(ShapeBucket(width=int(match.group(1)), height=int(match.group(2))))
    return tuple(buckets)


def bucket_for(
    width: int, height: int, buckets: tuple[ShapeBucket, ...]
) -> ShapeBucket | Literal[True] | None:
    """The bucket serving width x height; True when no buckets are configured (any size)."""
    if not buckets:
        return True
    return next((b for b in buckets if b.width == width and b.height == height), None)


def bucket_error(width: int, height: int, buckets: tuple[ShapeBucket, ...]) -> str | None:
    """The reason a size cannot run on this endpoint, naming the sizes it can run; or None."""
    if bucket_for(width, height, buckets) is not None:
        return None
    names = ", ".join(str(b) for b in buckets)
    return (
        f"size {width}x{height} is not one the SageMaker endpoint was compiled for; "
        f"it serves {names}"
    )


# -- the wire format -----------------------------------------------------------------------


class ChunkInvocation(BaseModel):
    """The async request body: one chunk's images still to make, and where to put them."""

    batch_id: str
    chunk_id: str
    bucket: str
    output_prefix: str
    attempt: int = Field(ge=1, default=1)
    # The Step Functions task token: the container heartbeats with it while it works and
    # record_result answers it; it never leaves the data bucket and the state machine.
    task_token: str | None = None
    images: list[ImageJob]


class ServedImage(BaseModel):
    image_id: str
    status: Literal["SUCCEEDED", "FAILED"]
    seed: int
    key: str | None = None
    # This image's share of its pipeline call: call seconds / images in the call.
    inference_seconds: float = Field(ge=0, default=0.0)
    call: int | None = None
    failure_class: FailureClass | None = None
    failure_reason: str | None = None


class ServingCall(BaseModel):
    """One pipeline call (a micro-batch): images that shared its measured time."""

    call: int
    width: int
    height: int
    steps: int
    images: int
    seconds: float = Field(ge=0)


class InvocationResult(BaseModel):
    batch_id: str
    chunk_id: str
    attempt: int = 1
    accelerator: str
    max_batch: int
    images: list[ServedImage]
    calls: list[ServingCall]


class AsyncRequestParameters(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    content_type: str | None = Field(default=None, alias="contentType")
    endpoint_name: str = Field(alias="endpointName")
    input_location: str = Field(alias="inputLocation")


class AsyncResponseParameters(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    content_type: str | None = Field(default=None, alias="contentType")
    output_location: str | None = Field(default=None, alias="outputLocation")
    failure_location: str | None = Field(default=None, alias="failureLocation")


class AsyncNotification(BaseModel):
    """The message SageMaker Asynchronous Inference publishes to the success/error topic.

    Shape: https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    aws_region: str | None = Field(default=None, alias="awsRegion")
    event_time: str | None = Field(default=None, alias="eventTime")
    received_time: str | None = Field(default=None, alias="receivedTime")
    invocation_status: Literal["Completed", "Failed"] = Field(alias="invocationStatus")
    failure_reason: str | None = Field(default=None, alias="failureReason")
    request_parameters: AsyncRequestParameters = Field(alias="requestParameters")
    response_parameters: AsyncResponseParameters = Field(
        default_factory=AsyncResponseParameters, alias="responseParameters"
    )
    inference_id: str = Field(alias="inferenceId")
    event_version: str = Field(default="1.0", alias="eventVersion")
    event_source: str = Field(default="aws:sagemaker", alias="eventSource")
    event_name: str = Field(default="InferenceResult", alias="eventName")


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 URI without bucket or key: {uri!r}")
    return bucket, key


# -- cost --------------------------------------------------------------------------------


def _micro(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


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
        total = _micro(Decimal(str(call.seconds)) * per_second)
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


class Throughput(BaseModel):
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
def load_throughput() -> dict[str, Throughput]:
    text = resources.files("imagebatch.data").joinpath("sagemaker_throughput.json").read_text()
    entries = json.loads(text)["instances"]
    return {e["instance_type"]: Throughput.model_validate(e) for e in entries}


def estimate_micro_usd(
    width: int, height: int, steps: int | None, price: InstancePrice, *, default_steps: int = 30
) -> int:
    """An image's expected cost before it runs: the reference seconds scaled by pixels and
    steps, x the price per second. Budgets use it; the ledger charges measured seconds."""
    reference = load_throughput().get(price.instance_type)
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
    return int((seconds * price.micro_usd_per_second).quantize(Decimal(1), ROUND_UP))


def image_metadata(batch_id: str, job: ImageJob, seed: int) -> dict[str, str]:
    """S3 object metadata of a PNG: the same keys the Bedrock path writes (generate.py)."""
    return {
        "batch-id": batch_id,
        "item-id": job.item_id,
        "model": job.model,
        "seed": str(seed),
        "prompt-sha256": job.prompt_sha256,
    }
