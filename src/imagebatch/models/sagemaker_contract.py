"""The SageMaker asynchronous backend's wire contract, shared with the serving container.

One async request carries one chunk. The Lambda side (pipeline.sagemaker_chunk) and the
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
