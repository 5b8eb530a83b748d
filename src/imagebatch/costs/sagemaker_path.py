"""What one chunk attempt on the SageMaker path does and costs: expected (estimates) and at most
(budget holds), counted the way submit_chunk and record_result count it.

One attempt: SubmitChunk (the backend Choice and the task: two transitions; its Lambda reads the
chunk file and the ledger, holds budget, writes the request object, InvokeEndpointAsync);
SageMaker reads the request, the container writes one PNG per image, SageMaker writes the result
object and publishes one SNS notification, delivered to SQS (send, receive, delete); RecordResult
reads the request and result objects and commits in one transaction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from imagebatch.costs.estimate import (
    BOUND_PNG_BYTES_PER_PIXEL,
    EXPECTED_PNG_BYTES_PER_PIXEL,
    IMAGE_RECORD_BOUND_BYTES,
    IMAGE_RECORD_BYTES,
    REFUSAL_SECONDS_BOUND,
    BatchEstimate,
    Shape,
    batch_usage,
    chunk_usage,
    contact_sheet_reserve,
    expected_contact_sheet,
    load_speed_assumptions,
    refusal_usage,
)
from imagebatch.costs.prices import InstancePrice, RegionPrices
from imagebatch.costs.sagemaker_seconds import ExpectedSeconds
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import (
    Usage,
    price_usage,
    rollup_write_units,
    summary_write_units,
    tags_bytes,
    write_units,
)
from imagebatch.models.money import ceil_micro
from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import shape_key

# Request and result objects (JSON): a fixed part (ids, the task token, the hold) and a part
# per image; measured from the contract's models with a 100-character prompt, rounded up.
REQUEST_FIXED_BYTES = 2048
REQUEST_IMAGE_BYTES = 512
RESULT_FIXED_BYTES = 512
RESULT_IMAGE_BYTES = 320
# What InvokeEndpointAsync answered, kept beside the request (models.sagemaker_contract
# SubmittedRequest): an inference id and two S3 URIs. Expected, and at most (S3 keys are at
# most 1,024 bytes, bucket names 63).
SUBMITTED_BYTES = 320
SUBMITTED_BOUND_BYTES = 2 * (5 + 63 + 1 + 1024) + 128
# A request marker and a budget hold item stay under 1 KB.
_SMALL_ITEM_WRITE = write_units(0, transactional=True)
# SNS -> SQS: SageMaker's one publish; SQS SendMessage (by SNS), ReceiveMessage, DeleteMessage.
SNS_PUBLISHES = 1
SQS_REQUESTS = 3


class SageMakerPath(BaseModel):
    """How the stack deployed the SageMaker path's functions, and the hold's headroom."""

    model_config = ConfigDict(frozen=True)
    submit_memory_mb: int = 512
    record_memory_mb: int = 256
    record_timeout_s: int = 30
    max_batch: int = 4
    # The hold covers this many times the chunk's expected instance-seconds (measured means
    # vary call to call), plus one full call of that size for a call stopped mid-step.
    hold_factor: Decimal = Decimal(2)


def attempt_usage(
    images: int,
    *,
    shapes: int,
    png_bytes: int,
    capped: bool,
    path: SageMakerPath,
    submit_seconds: Decimal,
    record_seconds: Decimal,
    tag_bytes: int = 0,
) -> Usage:
    """What one attempt that makes every image is expected to count; the summary and the
    rollup carry the batch's tags (`tag_bytes`)."""
    summary_units = summary_write_units(tag_bytes)
    hold_writes = (_SMALL_ITEM_WRITE + summary_units) if capped else 0
    return Usage(
        sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
        lambda_requests=2,
        lambda_mb_ms=math.ceil(submit_seconds * 1000) * path.submit_memory_mb
        + math.ceil(record_seconds * 1000) * path.record_memory_mb,
        # submit: summary, recorded images, measured shapes; record: the hold, recorded images
        ddb_read_units=1 + images + shapes + (1 if capped else 0) + images,
        # submit: the hold; record: image records, summary, rollup, request marker, the hold,
        # one throughput counter per shape
        ddb_write_units=hold_writes
        + images * write_units(IMAGE_RECORD_BYTES, transactional=True)
        + summary_units
        + rollup_write_units(tag_bytes)
        + _SMALL_ITEM_WRITE
        + (_SMALL_ITEM_WRITE if capped else 0)
        + shapes * write_units(0),
        # chunk file; SageMaker reads the request; record reads request, submit's answer
        # and the result
        s3_get_requests=5,
        # request, submit's answer, one PNG per image, result
        s3_put_requests=images + 3,
        s3_bytes_written=REQUEST_FIXED_BYTES
        + SUBMITTED_BYTES
        + REQUEST_IMAGE_BYTES * images
        + png_bytes * images
        + RESULT_FIXED_BYTES
        + RESULT_IMAGE_BYTES * images,
        sns_publishes=SNS_PUBLISHES,
        sqs_requests=SQS_REQUESTS,
    )


def sagemaker_overhead_per_image(
    prices: RegionPrices, shape: Shape, path: SageMakerPath, *, pixels: int = 512 * 512
) -> Decimal:
    """What an image on the endpoint costs besides its instance-seconds: its share of a full
    chunk attempt (both Lambdas, transitions, messages, ledger, PNG, objects)."""
    lambdas = load_speed_assumptions().sagemaker_lambda_seconds
    n = shape.chunk_size
    usage = attempt_usage(
        n,
        shapes=1,
        png_bytes=int(pixels * EXPECTED_PNG_BYTES_PER_PIXEL),
        capped=False,
        path=path,
        submit_seconds=lambdas.submit,
        record_seconds=lambdas.record,
    )
    return price_usage(usage, prices).total / n


def attempt_bound(
    images: int,
    *,
    shapes: int,
    pixels_bound: int,
    submit: Usage,
    path: SageMakerPath,
    tag_bytes: int = 0,
) -> Usage:
    """The most one attempt can count besides instance time: what submit counted (exact: it
    is counted before the hold, the hold's summary update at the size bound), RecordResult
    to its timeout, image records at their largest, each PNG at 4 bytes a pixel, each image
    its own rollup, SageMaker's objects. The summary and rollups carry the batch's tags
    (`tag_bytes`): the hold's update is billed at that size past its bound, and the commit's
    summary and rollups at their bounds plus it (as aws.ledger charges them)."""
    tagged_hold = summary_write_units(tag_bytes) - summary_write_units()
    return submit + Usage(
        lambda_requests=1,
        lambda_mb_ms=path.record_timeout_s * 1000 * path.record_memory_mb,
        # the hold, and the recorded images on each try of the commit and once more
        ddb_read_units=1 + 4 * images,
        ddb_write_units=tagged_hold
        + images * write_units(IMAGE_RECORD_BOUND_BYTES, transactional=True)
        + summary_write_units(tag_bytes)
        + images * rollup_write_units(tag_bytes)
        + 2 * _SMALL_ITEM_WRITE
        + shapes * write_units(0),
        # SageMaker reads the request; record reads request, submit's answer and result
        s3_get_requests=4,
        # submit's answer (written after the hold), the PNGs, the result
        s3_put_requests=images + 2,
        s3_bytes_written=SUBMITTED_BOUND_BYTES
        + (pixels_bound * BOUND_PNG_BYTES_PER_PIXEL) * images
        + 2 * (RESULT_FIXED_BYTES + RESULT_IMAGE_BYTES * images),
        sns_publishes=SNS_PUBLISHES,
        sqs_requests=SQS_REQUESTS,
    )


def refusal_bound(images: int, memory_mb: int, tag_bytes: int = 0) -> Usage:
    """At most what a submit refused for budget counts: read, fail to hold, record, answer
    (the summary and rollups at the size of the batch's tags)."""
    return Usage(
        sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
        lambda_requests=1,
        lambda_mb_ms=REFUSAL_SECONDS_BOUND * 1000 * memory_mb,
        ddb_read_units=2 + 2 * images,
        ddb_write_units=images * write_units(IMAGE_RECORD_BOUND_BYTES, transactional=True)
        + 2 * summary_write_units(tag_bytes)
        + images * rollup_write_units(tag_bytes)
        + _SMALL_ITEM_WRITE,
        s3_get_requests=1,
    )


# What a request's container spends besides its pipeline calls (reading the request, writing
# PNGs and the result to S3), at most: assumed, not measured; SageMaker's timeout only has to
# be past it, and the hold never pays for it (instance time is charged by the window).
REQUEST_IO_SECONDS = 60


def invocation_timeout_s(max_seconds: Decimal, ceiling: int) -> int:
    """SageMaker's InvocationTimeoutSeconds for a request whose hold covers `max_seconds`:
    the container starts no call past them and a call running over ends at its next step (a
    compiled Neuron call runs to its end), and no call is longer than all of them (a hold
    covers at least its first call), so twice them plus the request's S3 time bounds it, at
    most the stack's `ceiling`. A container that ignored the hold is stopped there."""
    return max(1, min(ceiling, math.ceil(2 * max_seconds) + REQUEST_IO_SECONDS))


class HoldPlan(BaseModel):
    """An attempt's budget hold: the instance-seconds the container may use, and the money."""

    model_config = ConfigDict(frozen=True)
    max_seconds: Decimal
    micro_usd: int


def container_seconds(
    todo: Sequence[ImageJob], expected: ExpectedSeconds, path: SageMakerPath
) -> Decimal:
    """The instance-seconds a request may use: its images' expected seconds x the factor."""
    return sum((expected.for_job(job) for job in todo), start=Decimal(0)) * path.hold_factor


class HoldSizer:
    """Sizes an attempt's hold: the whole chunk at the hold factor when the budget allows,
    else what is left, as long as that covers at least the first call (the container then
    makes what fits and the retry asks for the rest).

    A hold of `max_seconds` also covers one expected full call past them (a call running late
    is stopped at its next step, not at once) and the most everything else can count.
    """

    def __init__(
        self,
        todo: Sequence[ImageJob],
        expected: ExpectedSeconds,
        price: InstancePrice,
        prices: RegionPrices,
        *,
        path: SageMakerPath,
        submit: Usage,
    ) -> None:
        self._per_second = price.micro_usd_per_second
        self._full = container_seconds(todo, expected, path)
        first_call = min(path.max_batch, len(todo))
        self._full_call = max(expected.for_job(job) for job in todo) * first_call
        self._first_call = sum((expected.for_job(job) for job in todo[:first_call]), Decimal(0))
        usage = attempt_bound(
            len(todo),
            shapes=len({shape_key(job) for job in todo}),
            pixels_bound=max(job.width * job.height for job in todo),
            submit=submit,
            path=path,
            # a job's tags hold the batch's, which the summary and rollups carry
            tag_bytes=max(tags_bytes(job.tags) for job in todo),
        )
        self._fixed = price_usage(usage, prices).total

    def _cost(self, max_seconds: Decimal) -> int:
        return ceil_micro((max_seconds + self._full_call) * self._per_second + self._fixed)

    def full(self) -> HoldPlan:
        return HoldPlan(max_seconds=self._full, micro_usd=self._cost(self._full))

    @property
    def smallest(self) -> int:
        """The least hold worth making: one expected call and the rest of the attempt."""
        return self._cost(self._first_call)

    def within(self, budget_left: int) -> HoldPlan | None:
        """The largest hold up to the full one that `budget_left` covers; None when it
        cannot cover the first call."""
        full = self.full()
        if budget_left >= full.micro_usd:
            return full
        if budget_left < self.smallest:
            return None
        seconds = (Decimal(budget_left) - self._fixed) / self._per_second - self._full_call
        seconds = max(self._first_call, min(self._full, seconds))
        plan = HoldPlan(max_seconds=seconds, micro_usd=self._cost(seconds))
        return plan if plan.micro_usd <= budget_left else None


def estimate_sagemaker_batch(
    inference_micro_usd: Decimal,
    chunk_sizes: Sequence[int],
    chunk_shapes: Sequence[int],
    prices: RegionPrices,
    shape: Shape,
    *,
    path: SageMakerPath,
    capped: bool,
    pixels: int,
    tag_bytes: int = 0,
) -> BatchEstimate:
    """Expected cost of a SageMaker batch with these chunks (each made in one attempt), and
    the reserve that lets a chunk refused for budget record its images."""
    return estimate_mixed_batch(
        inference_micro_usd,
        [],
        list(zip(chunk_sizes, chunk_shapes, strict=True)),
        prices,
        shape,
        path=path,
        capped=capped,
        pixels=pixels,
        tag_bytes=tag_bytes,
    )


def estimate_mixed_batch(
    inference_micro_usd: Decimal,
    bedrock_chunks: Sequence[int],
    sagemaker_chunks: Sequence[tuple[int, int]],
    prices: RegionPrices,
    shape: Shape,
    *,
    path: SageMakerPath,
    capped: bool,
    pixels: int,
    tag_bytes: int = 0,
) -> BatchEstimate:
    """Expected cost of a batch whose chunks run on Bedrock (`bedrock_chunks`: images each)
    and on the endpoint (`sagemaker_chunks`: images and call shapes each), with the reserve
    for refusals, finalize and the contact sheet; the ledger's writes at the size of the
    batch's tags (`tag_bytes`). Inference is exact, rounded up once."""
    speeds = load_speed_assumptions()
    lambdas = speeds.sagemaker_lambda_seconds
    png = int(pixels * EXPECTED_PNG_BYTES_PER_PIXEL)
    images = sum(bedrock_chunks) + sum(n for n, _ in sagemaker_chunks)
    chunks = len(bedrock_chunks) + len(sagemaker_chunks)
    usage = batch_usage(chunks, images, shape, tag_bytes)
    usage += expected_contact_sheet(images, chunks, shape)
    refusals = contact_sheet_reserve(images, chunks, shape)
    bedrock_lambda_s = speeds.bedrock.seconds_per_image / shape.chunk_concurrency
    for n in bedrock_chunks:
        usage += chunk_usage(n, bedrock_lambda_s * n, shape.chunk_memory_mb, png, tag_bytes)
        refusals += refusal_usage(n, shape.chunk_memory_mb, tag_bytes)
    for n, shapes in sagemaker_chunks:
        usage += attempt_usage(
            n,
            shapes=shapes,
            png_bytes=png,
            capped=capped,
            path=path,
            submit_seconds=lambdas.submit,
            record_seconds=lambdas.record,
            tag_bytes=tag_bytes,
        )
        refusals += refusal_bound(n, path.submit_memory_mb, tag_bytes)
    costs = price_usage(usage, prices)
    return BatchEstimate(
        images=images,
        chunks=chunks,
        inference_micro_usd=ceil_micro(inference_micro_usd),
        orchestration_micro_usd=ceil_micro(costs.orchestration),
        storage_micro_usd=ceil_micro(costs.storage),
        overhead_reserve_micro_usd=ceil_micro(
            price_usage(refusals, prices).total
            + price_usage(batch_usage(0, 0, shape, tag_bytes), prices).total
        ),
    )
