"""The SageMaker branch of a chunk: submit it with its task token, record what came back.

submit_chunk runs inside `lambda:invoke.waitForTaskToken`: it never answers the state machine
itself unless there is nothing left to make or the budget cannot hold the chunk. record_result
runs per SNS notification (via SQS) and answers the token: SendTaskSuccess with the chunk's
totals after the ledger commit, or SendTaskFailure so the state machine's Retry submits the
chunk again.

Budget (a batch with max_cost_usd), as on the Bedrock path: submit_chunk holds an upper bound of
what the attempt can charge (the instance-seconds the container may use plus one stopped call,
both Lambdas, messages, requests, storage) before InvokeEndpointAsync, under a hold id of its
own, since a request can outlive its attempt; the container uses no more instance-seconds than
the hold covers; record_result settles that hold to the actual charge in its commit, which also
carries every second the request used (failed and stopped calls, images another attempt
recorded: `rework`), the attempt's Lambda, Step Functions, SNS and SQS usage, and the batch
tags for the rollups. A hold is released when its request fails, and a hold no result settles
is written off by finalize as spent, so spent + held + left + reserve = cap throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ValidationError

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.ledger_holds import hold_write_units
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.backends.sagemaker import expected_seconds, price_result
from imagebatch.costs.overhead import EndpointRequest
from imagebatch.costs.prices import InstancePrice, RegionPrices
from imagebatch.costs.sagemaker_path import (
    SNS_PUBLISHES,
    SQS_REQUESTS,
    HoldPlan,
    HoldSizer,
    SageMakerPath,
)
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms
from imagebatch.errors import ImagesAlreadyRecordedError, ObjectMissingError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import ChunkFile, ChunkResult, ChunkTask, FailureClass, ImageJob
from imagebatch.models.records import ImageOutcome as Outcome
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    shape_key,
)

if TYPE_CHECKING:
    from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
    from imagebatch.aws.stepfunctions import TaskTokens

logger = Logger(child=True)

INPUT_PREFIX = "async-inputs/"
#: The error names the state machine retries on (statemachine/batch.asl.json).
INFERENCE_FAILED = "SageMaker.InferenceFailed"
INCOMPLETE_RESULT = "SageMaker.IncompleteResult"
# Another result of the same chunk may commit its images between our read and our commit.
_COMMIT_TRIES = 3
# A hold covers submit as counted when it is sized, plus this much more of its Lambda (the
# hold's own write and the request PUT) and this many bytes of counts in the request object.
SUBMIT_TAIL_S = 2
_COUNTS_BYTES = 1024


class SubmitTask(ChunkTask):
    """The SubmitChunk state's payload: the Map item plus its task token and retry count."""

    task_token: str
    retry_count: int = 0


class SubmitReceipt(BaseModel):
    inference_id: str | None
    input_location: str | None
    images: int
    skipped_already_done: int
    held_micro_usd: int | None = None
    refused: bool = False


@dataclass(frozen=True)
class EndpointCosting:
    """What prices the endpoint's work: the deployed instance and model, region prices, the
    path's functions, and the endpoint's measured throughput."""

    endpoint_name: str
    price: InstancePrice
    prices: RegionPrices
    path: SageMakerPath
    throughput: EndpointThroughput
    # The model the endpoint serves; empty: each image's own model id.
    model: str = ""

    def model_for(self, job: ImageJob) -> str:
        return self.model or job.model


class InvocationRequest:
    """The one Lambda request of a RecordResult invocation that handles several records:
    charged by the first record that commits (each record charges its own duration)."""

    def __init__(self) -> None:
        self.charged = False


def inference_id_for(task: SubmitTask) -> str:
    """Stable per token, so a re-invoked submit Lambda writes and submits the same request."""
    digest = hashlib.sha256(task.task_token.encode()).hexdigest()[:24]
    return f"{task.chunk.chunk_id}-{task.retry_count + 1}-{digest}"


def submit_chunk(
    task: SubmitTask,
    *,
    store: BatchStore,
    ledger: Ledger,
    endpoint: AsyncEndpoint,
    tokens: TaskTokens,
    costing: EndpointCosting,
    clock: LambdaClock,
) -> SubmitReceipt:
    chunk = store.get_chunk(task.chunk.key)
    done = ledger.recorded_image_ids(task.batch_id, [job.image_id for job in chunk.images])
    todo = [job for job in chunk.images if job.image_id not in done]
    if not todo:
        # A retry after the images were recorded: nothing to send, answer the token now.
        result = ChunkResult.already_done(chunk.chunk_id, len(done))
        tokens.succeed(task.task_token, result.model_dump_json())
        return SubmitReceipt(
            inference_id=None, input_location=None, images=0, skipped_already_done=len(done)
        )
    inference_id = inference_id_for(task)
    model = costing.model or todo[0].model
    keys = {shape_key(job) for job in todo}
    expected = expected_seconds(
        keys,
        instance_type=costing.price.instance_type,
        model=model,
        measured=costing.throughput.measured(costing.endpoint_name, model, keys),
    )
    invocation = ChunkInvocation(
        batch_id=chunk.batch_id,
        chunk_id=chunk.chunk_id,
        bucket=task.bucket,
        output_prefix=chunk.output_prefix,
        attempt=task.retry_count + 1,
        task_token=task.task_token,
        images=todo,
        seconds_per_image={key: float(expected.per_image[key]) for key in sorted(keys)},
        tags=chunk.tags,
    )
    summary = ledger.get_batch(task.batch_id)
    capped = summary is not None and summary.capped
    key = f"{INPUT_PREFIX}{chunk.batch_id}/{inference_id}.json"
    held: int | None = None
    if capped:
        # Hold the most this attempt can charge before anything is spent on it.
        sizer = HoldSizer(
            todo,
            expected,
            costing.price,
            costing.prices,
            path=costing.path,
            submit=_submit_usage(store, ledger, clock, hold=(task.batch_id, inference_id))
            + Usage(
                s3_put_requests=1,
                s3_bytes_written=len(invocation.model_dump_json()) + _COUNTS_BYTES,
                lambda_mb_ms=SUBMIT_TAIL_S * 1000 * clock.memory_mb,
            ),
        )
        granted = _reserve(ledger, task.batch_id, inference_id, sizer, summary)
        if granted is None:
            return _refuse_for_budget(
                task,
                chunk,
                todo,
                store=store,
                ledger=ledger,
                tokens=tokens,
                clock=clock,
                prices=costing.prices,
            )
        held, plan = granted
        invocation = invocation.model_copy(
            update={"hold_id": inference_id, "max_seconds": float(plan.max_seconds)}
        )
    body, invocation = _request_body(invocation, store, ledger, clock)
    store.put_json(key, body)
    input_location = f"s3://{task.bucket}/{key}"
    try:
        output_location = endpoint.submit(input_location, inference_id)
    except Exception:
        if held is not None:
            _release(invocation, held, ledger, costing.prices)
        raise
    logger.info(
        "chunk submitted",
        extra={
            "inference_id": inference_id,
            "output_location": output_location,
            "images": len(todo),
            "held_micro_usd": held,
            "max_seconds": invocation.max_seconds,
        },
    )
    return SubmitReceipt(
        inference_id=inference_id,
        input_location=input_location,
        images=len(todo),
        skipped_already_done=len(done),
        held_micro_usd=held,
    )


def _reserve(
    ledger: Ledger,
    batch_id: str,
    hold_id: str,
    sizer: HoldSizer,
    summary: BatchRecord | None,
) -> tuple[int, HoldPlan] | None:
    """Hold the whole chunk if the budget allows, else what is left (if that covers a call);
    once more with a fresh summary if another chunk held budget meanwhile."""
    left = summary.budget_left_micro_usd if summary is not None else 0
    for _ in range(2):
        plan = sizer.within(left)
        if plan is None:
            return None
        held = ledger.reserve(batch_id, hold_id, plan.micro_usd)
        if held is not None:
            return held, plan
        fresh = ledger.get_batch(batch_id)
        left = fresh.budget_left_micro_usd if fresh is not None else 0
    return None


def _submit_usage(
    store: BatchStore,
    ledger: Ledger,
    clock: LambdaClock,
    *,
    hold: tuple[str, str] | None = None,
) -> Usage:
    """What this submit did so far, the hold it is about to write included: its requests,
    the attempt's transitions, its Lambda until now (what runs after the request object
    is written, a few tens of milliseconds, is not counted; see README Known gaps)."""
    return (
        store.meter.usage()
        + ledger.meter.usage()
        + Usage(
            sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
            lambda_requests=1,
            lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb),
            ddb_write_units=hold_write_units(*hold) if hold else 0,
        )
    )


def _request_body(
    invocation: ChunkInvocation, store: BatchStore, ledger: Ledger, clock: LambdaClock
) -> tuple[bytes, ChunkInvocation]:
    """The request object, carrying what submit counted (its hold, if any, is on the meter by
    now), the request's own PUT and bytes included. The size settles within two passes: the
    counts' digits change it by a few bytes."""
    usage = _submit_usage(store, ledger, clock)
    size = len(invocation.model_dump_json(exclude_none=True))
    counted = invocation
    for _ in range(3):
        total = usage + Usage(s3_put_requests=1, s3_bytes_written=size)
        counted = invocation.model_copy(update={"submit_usage": total.model_dump()})
        body = counted.model_dump_json(exclude_none=True)
        if len(body) == size:
            break
        size = len(body)
    return counted.model_dump_json(exclude_none=True).encode(), counted


def _release(invocation: ChunkInvocation, held: int, ledger: Ledger, prices: RegionPrices) -> None:
    """The request never reached the endpoint: settle the hold at what submit spent."""
    ledger.commit_images(
        invocation.batch_id,
        [],
        Settlement(
            chunk_id=invocation.chunk_id,
            hold_id=invocation.hold_id,
            reserved_micro_usd=held,
            has_reservation=True,
            usage=Usage(**invocation.submit_usage),
            prices=prices,
        ),
        tags=invocation.tags,
        capped=True,
    )
    logger.warning("budget hold released: the request was not submitted")


def _refuse_for_budget(
    task: SubmitTask,
    chunk: ChunkFile,
    todo: list[ImageJob],
    *,
    store: BatchStore,
    ledger: Ledger,
    tokens: TaskTokens,
    clock: LambdaClock,
    prices: RegionPrices,
) -> SubmitReceipt:
    """The budget cannot cover the chunk: record its images, send nothing, answer the token."""
    outcomes = [
        Outcome.failed(
            job,
            chunk_id=chunk.chunk_id,
            backend="sagemaker",
            failure_class=FailureClass.BUDGET_EXHAUSTED,
            reason="max_cost_usd reached: the budget left could not cover this chunk",
        )
        for job in todo
    ]
    settlement = Settlement(
        chunk_id=chunk.chunk_id,
        usage=_submit_usage(store, ledger, clock),
        prices=prices,
        from_overhead_reserve=True,
    )
    # A late result of an earlier attempt may have recorded some of them meanwhile.
    with contextlib.suppress(ImagesAlreadyRecordedError):
        ledger.commit_images(task.batch_id, outcomes, settlement, tags=chunk.tags, capped=True)
    logger.warning("chunk refused: budget exhausted", extra={"chunk_id": chunk.chunk_id})
    result = ChunkResult(
        chunk_id=chunk.chunk_id, succeeded=0, failed=len(outcomes), cost_micro_usd=0
    )
    tokens.succeed(task.task_token, result.model_dump_json())
    return SubmitReceipt(
        inference_id=None,
        input_location=None,
        images=0,
        skipped_already_done=len(chunk.images) - len(todo),
        refused=True,
    )


# --- results ---------------------------------------------------------------------------------


def request_key(notification: AsyncNotification) -> str:
    """One key per request the endpoint ran: SageMaker names each output object anew, so a
    redelivered notification has the same key and a second run of the same request not."""
    response = notification.response_parameters
    location = response.output_location or response.failure_location or notification.inference_id
    return hashlib.sha256(location.encode()).hexdigest()[:32]


def record_result(
    notification: AsyncNotification,
    *,
    store: BatchStore,
    ledger: Ledger,
    tokens: TaskTokens,
    costing: EndpointCosting,
    clock: LambdaClock,
    request: InvocationRequest | None = None,
) -> ChunkResult | None:
    """Price and record one finished async request, settle its hold, answer its token."""
    invocation = ChunkInvocation.model_validate_json(
        store.read_uri(notification.request_parameters.input_location)
    )
    token = invocation.task_token
    if token is None:
        logger.warning(
            "async request without a task token", extra={"id": notification.inference_id}
        )
        return None
    held: int | None = None
    if invocation.hold_id is not None:
        held = ledger.hold_amount(invocation.batch_id, invocation.hold_id)
        if held is None:
            # Settled by an earlier delivery, or written off by finalize (charged in full).
            _answer_if_all_recorded(notification, invocation, ledger, tokens, token)
            return None
    result, object_bytes, failure = _read_result(notification, store)
    fixed = Usage(
        sns_publishes=SNS_PUBLISHES,
        sqs_requests=SQS_REQUESTS,
        # SageMaker reads the request and writes the result (or failure) object
        s3_get_requests=1,
        s3_put_requests=1 if object_bytes is not None else 0,
        s3_bytes_written=object_bytes or 0,
    )
    written = [image for image in (result.images if result else []) if image.png_bytes]
    fixed += Usage(s3_put_requests=len(written), s3_bytes_written=sum(i.png_bytes for i in written))
    sums = EndpointThroughput.sums(result.calls) if result else {}
    committed = _commit(
        invocation,
        result,
        held,
        ledger=ledger,
        store=store,
        costing=costing,
        clock=clock,
        extra=fixed + Usage(ddb_write_units=len(sums)),
        key=request_key(notification),
        request=request or InvocationRequest(),
        notification=notification,
    )
    if committed is None:
        _answer_if_all_recorded(notification, invocation, ledger, tokens, token)
        return None
    if sums:
        costing.throughput.add(costing.endpoint_name, costing.model or _model(invocation), sums)
    answered = {image.image_id for image in result.images} if result else set()
    missing = sorted({job.image_id for job in invocation.images} - answered)
    if failure is not None:
        tokens.fail(token, *failure)
        return None
    if missing:
        # Recorded what came back; the retry submits only the rest.
        cause = {"missing": missing, "stopped": result.stopped if result else None}
        tokens.fail(token, INCOMPLETE_RESULT, json.dumps(cause))
        return None
    tokens.succeed(token, committed.model_dump_json())
    return committed


def _model(invocation: ChunkInvocation) -> str:
    return invocation.images[0].model if invocation.images else ""


def _commit(
    invocation: ChunkInvocation,
    result: InvocationResult | None,
    held: int | None,
    *,
    ledger: Ledger,
    store: BatchStore,
    costing: EndpointCosting,
    clock: LambdaClock,
    extra: Usage,
    key: str,
    request: InvocationRequest,
    notification: AsyncNotification | None = None,
) -> ChunkResult | None:
    """One transaction: the new image records, the rework, the usage, the hold settled.
    None when this request was recorded (or its hold settled) before."""
    for attempt in range(_COMMIT_TRIES):
        answered = [image.image_id for image in result.images] if result else []
        recorded = ledger.recorded_image_ids(invocation.batch_id, answered) if answered else set()
        priced = (
            price_result(
                result,
                invocation.images,
                costing.price,
                recorded=recorded,
                model_label=costing.model or "sagemaker",
            )
            if result
            else None
        )
        outcomes = priced.outcomes if priced else []
        if costing.model:
            outcomes = [o.model_copy(update={"model": costing.model}) for o in outcomes]
        usage = (
            Usage(**invocation.submit_usage)
            + store.meter.usage()
            + ledger.meter.usage()
            + extra
            + Usage(
                lambda_requests=0 if request.charged else 1,
                lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb),
            )
        )
        settlement = Settlement(
            chunk_id=invocation.chunk_id,
            hold_id=invocation.hold_id,
            reserved_micro_usd=held or 0,
            has_reservation=held is not None,
            usage=usage,
            prices=costing.prices,
            rework_micro_usd=priced.rework_micro_usd if priced else 0,
            request_key=key,
            endpoint=costing.endpoint_name,
            endpoint_request=_endpoint_request(
                invocation,
                result,
                notification,
                key,
                outcomes,
                priced.rework_micro_usd if priced else 0,
            ),
        )
        try:
            ledger.commit_images(
                invocation.batch_id,
                outcomes,
                settlement,
                tags=invocation.tags,
                capped=invocation.hold_id is not None,
            )
        except ImagesAlreadyRecordedError as exc:
            if exc.settled_elsewhere or attempt == _COMMIT_TRIES - 1:
                logger.info("result already recorded", extra={"request": key})
                return None
            continue  # another attempt recorded some of these images meanwhile: re-price
        store.meter.take()
        ledger.meter.take()
        request.charged = True
        return ChunkResult(
            chunk_id=invocation.chunk_id,
            succeeded=sum(1 for o in outcomes if o.status == "SUCCEEDED"),
            failed=sum(1 for o in outcomes if o.status == "FAILED"),
            cost_micro_usd=sum(o.cost_micro_usd for o in outcomes),
            skipped_already_done=len(recorded),
        )
    return None


def _endpoint_request(  # noqa: PLR0917 - one request's parts, each used once
    invocation: ChunkInvocation,
    result: InvocationResult | None,
    notification: AsyncNotification | None,
    key: str,
    outcomes: list[Outcome],
    rework_micro_usd: int,
) -> EndpointRequest:
    """The request as the endpoint observer sees it: SageMaker's received and event times,
    every call's seconds, and what this commit charges for them."""
    now = datetime.now(UTC)
    received = _time(notification.received_time if notification else None) or now
    completed = _time(notification.event_time if notification else None) or now
    return EndpointRequest(
        batch_id=invocation.batch_id,
        request_id=key,
        received_at=received,
        completed_at=max(completed, received),
        inference_seconds=sum(
            (Decimal(str(call.seconds)) for call in (result.calls if result else [])), Decimal(0)
        ),
        inference_micro_usd=sum(o.cost_micro_usd for o in outcomes) + rework_micro_usd,
    )


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _ErrorBody(BaseModel):
    """The serving container's error response (SageMaker stores it as the failure object)."""

    error: str = ""
    message: str = ""
    partial: InvocationResult | None = None


def _read_result(
    notification: AsyncNotification, store: BatchStore
) -> tuple[InvocationResult | None, int | None, tuple[str, str] | None]:
    """(what the request did, the size of the object SageMaker wrote, the error to fail the
    token with). A failed request may still carry a partial result: images made and the
    seconds of every call before it failed."""
    response = notification.response_parameters
    if notification.invocation_status == "Failed":
        cause = json.dumps(
            {
                "inference_id": notification.inference_id,
                "failure_reason": notification.failure_reason,
                "failure_location": response.failure_location,
            }
        )
        if response.failure_location is None:
            return None, None, (INFERENCE_FAILED, cause)
        try:
            body = store.read_uri(response.failure_location)
        except ObjectMissingError:
            return None, None, (INFERENCE_FAILED, cause)
        try:
            partial = _ErrorBody.model_validate_json(body).partial
        except ValidationError:
            partial = None
        return partial, len(body), (INFERENCE_FAILED, cause)
    try:
        if response.output_location is None:
            raise ValueError("success notification without an outputLocation")
        body = store.read_uri(response.output_location)
        return InvocationResult.model_validate_json(body), len(body), None
    except (ValueError, ValidationError, ObjectMissingError) as exc:
        return None, None, (INCOMPLETE_RESULT, str(exc)[:30000])


def _answer_if_all_recorded(
    notification: AsyncNotification,
    invocation: ChunkInvocation,
    ledger: Ledger,
    tokens: TaskTokens,
    token: str,
) -> None:
    """A second delivery of this notification, or a late result of an attempt the state
    machine already retried: if every image is recorded, this token's chunk is done."""
    ids = [job.image_id for job in invocation.images]
    recorded = ledger.recorded_image_ids(invocation.batch_id, ids)
    logger.info(
        "result already recorded",
        extra={"inference_id": notification.inference_id, "recorded": len(recorded)},
    )
    if len(recorded) == len(ids):
        done = ChunkResult.already_done(invocation.chunk_id, len(ids))
        tokens.succeed(token, done.model_dump_json())
