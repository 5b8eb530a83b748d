"""The SageMaker asynchronous backend's wire contract, shared with the serving container.

One async request carries one chunk. The Lambda side (pipeline.sagemaker_submit,
sagemaker_result) and the
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

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imagebatch.models.records import FailureClass, ImageJob

_BUCKET = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")

# What the serving container uses when an image leaves steps or guidance out; the estimate
# and the budget hold must assume the same.
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
# Classifier-free guidance runs the UNet twice per step; at or below 1 diffusers skips it.
_CFG_THRESHOLD = 1.0


def shape_key(job: ImageJob) -> str:
    """The call shape an image runs in, as far as its time goes: size, steps, guidance on/off.

    Images of one key take the same time on one endpoint; the endpoint's measured throughput
    and the budget hold are kept per key.
    """
    steps = job.steps or DEFAULT_STEPS
    guidance = DEFAULT_GUIDANCE if job.guidance is None else job.guidance
    return f"{job.width}x{job.height}/{steps}/{'cfg' if guidance > _CFG_THRESHOLD else 'nocfg'}"


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
    # The budget: a capped batch's request carries the id of its budget hold and the
    # instance-seconds of pipeline calls the hold covers. The container starts no call it
    # expects to run past `max_seconds` and stops one that does at its next step, so the
    # request never uses more instance time than was held; the images it did not start are
    # left out of the result and the state machine's retry asks for them again.
    hold_id: str | None = None
    max_seconds: float | None = Field(default=None, gt=0)
    # Expected seconds per image by shape_key (what the hold was computed from): the
    # container's guess for a call shape it has not timed yet.
    seconds_per_image: dict[str, float] = Field(default_factory=dict)
    # What the submitting Lambda counted (usage.Usage fields), charged when the result is
    # recorded, and the batch tags for the cost rollups.
    submit_usage: dict[str, int] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)


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
    # Bytes of the PNG written to S3 (storage is charged per byte).
    png_bytes: int = Field(ge=0, default=0)


class ServingCall(BaseModel):
    """One pipeline call (a micro-batch): images that shared its measured time."""

    call: int
    width: int
    height: int
    steps: int
    images: int
    seconds: float = Field(ge=0)
    # Classifier-free guidance on (guidance > 1): the UNet runs twice per step.
    cfg: bool = True
    # The call ran past the seconds the request's hold left it and was stopped at a step:
    # its images are left out of the result, its seconds charged; `steps_done` of `steps`
    # ran (what its seconds say about a whole call's time).
    interrupted: bool = False
    steps_done: int | None = Field(default=None, ge=0)

    @property
    def key(self) -> str:
        """The shape_key of the call's images."""
        return f"{self.width}x{self.height}/{self.steps}/{'cfg' if self.cfg else 'nocfg'}"


class InvocationResult(BaseModel):
    batch_id: str
    chunk_id: str
    attempt: int = 1
    accelerator: str
    max_batch: int
    images: list[ServedImage]
    calls: list[ServingCall]
    # Why images of the request were left out (the hold's seconds ran out before them).
    stopped: str | None = None


class SubmittedRequest(BaseModel):
    """What InvokeEndpointAsync answered for one request, kept beside its input object
    (`submitted_key`): SageMaker's error notification carries a failureReason and no
    responseParameters (SageMaker developer guide, "Check prediction results"), so the
    FailureLocation, where the container's error body and its partial result land, is known
    only from this answer."""

    inference_id: str
    output_location: str | None = None
    failure_location: str | None = None


def chunk_of_inference(inference_id: str) -> str:
    """The chunk an inference id of SubmitChunk's names: `<chunk id>-<request>-<digest>`."""
    return inference_id.rsplit("-", 2)[0]


def submitted_key(input_key: str) -> str:
    """Where a request's SubmittedRequest is kept: next to its input object (a key or an
    s3:// URI, named alike)."""
    return f"{input_key.removesuffix('.json')}.submitted.json"


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
