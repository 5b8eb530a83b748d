"""SageMaker branch of a chunk, second half: record what came back, answer the token.

record_result runs per SNS notification (via SQS) and answers the token submit_chunk
(pipeline.sagemaker_submit) sent with the request: SendTaskSuccess with the chunk's totals
after the ledger commit, or SendTaskFailure so the state machine's Retry submits the chunk
again.

Its commit settles the request's budget hold to the actual charge and carries every second
the request used (failed and stopped calls, images another attempt recorded: `rework`), the
attempt's Lambda, Step Functions, SNS and SQS usage, and the batch tags for the rollups.

A result whose hold is gone is recorded all the same (an orphan): its request was written off
by finalize while still queued (the write-off charged the whole hold as spent, an upper bound
of what the request used), or it is a second run of one request (a submit whose reply was
lost, retried by botocore after SageMaker had queued it; nothing was held for it). Its new
images are recorded at no charge, its bookkeeping comes from the batch's overhead reserve,
and its instance-seconds go on the endpoint under its batch, uncharged: the endpoint observer
charges a window's instance time that no commit charged to the batches it served by their
seconds, these included (costs.overhead), never as idle of other batches alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ValidationError

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort, TaskTokensPort
from imagebatch.aws.throughput import THROUGHPUT_WRITE_UNITS, EndpointThroughput
from imagebatch.costs.overhead import EndpointRequest
from imagebatch.costs.sagemaker_path import SNS_PUBLISHES, SQS_REQUESTS
from imagebatch.costs.sagemaker_seconds import price_result
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms
from imagebatch.errors import ForgedResultError, ImagesAlreadyRecordedError, ObjectMissingError
from imagebatch.models.records import ChunkResult
from imagebatch.models.records import ImageOutcome as Outcome
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    SubmittedRequest,
    submitted_key,
)
from imagebatch.pipeline.result_authentication import check_locations, check_request
from imagebatch.pipeline.sagemaker_costing import EndpointCosting

logger = Logger(child=True)

#: The error names the state machine retries on (statemachine/batch.asl.json).
INFERENCE_FAILED = "SageMaker.InferenceFailed"
INCOMPLETE_RESULT = "SageMaker.IncompleteResult"
# Another result of the same chunk may commit its images between our read and our commit.
_COMMIT_TRIES = 3


class InvocationRequest:
    """The one Lambda request of a RecordResult invocation that handles several records:
    charged by the first record that commits (each record charges its own duration)."""

    def __init__(self) -> None:
        self.charged = False


def request_key(notification: AsyncNotification) -> str:
    """One key per run of a request on the endpoint. SageMaker names the output object after
    the InferenceId, so two runs of one id (a submit whose reply was lost, sent again by
    botocore after SageMaker had queued it) write the same location: the key is the id with
    the run's own times (when SageMaker received and finished it), which a redelivery of one
    notification repeats and a second run does not."""
    response = notification.response_parameters
    run = [
        notification.inference_id,
        notification.received_time or "",
        notification.event_time or "",
        notification.invocation_status,
    ]
    if not (notification.received_time or notification.event_time):
        # a notification without its times: its location is all that tells runs apart
        run.append(response.output_location or response.failure_location or "")
    return hashlib.sha256("\n".join(run).encode()).hexdigest()[:32]


def record_result(
    notification: AsyncNotification,
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    tokens: TaskTokensPort,
    costing: EndpointCosting,
    clock: LambdaClock,
    request: InvocationRequest | None = None,
    on_forged: Callable[[ForgedResultError], None] | None = None,
) -> ChunkResult | None:
    """Price and record one finished async request, settle its hold, answer its token. A
    notification that is not provably the endpoint's answer to the request it names is
    dropped (result_authentication.py): logged, passed to `on_forged`, nothing recorded."""
    # Stays whole (a few lines over 60): authenticate, read, commit, then answer the token,
    # in that order (the answer only after the commit); each step is a function of its own.
    invocation = _authentic_request(notification, store, on_forged)
    token = invocation.task_token if invocation is not None else None
    if invocation is None or token is None:
        if invocation is not None:
            logger.warning(
                "async request without a task token", extra={"id": notification.inference_id}
            )
        return None
    held: int | None = None
    if invocation.hold_id is not None:
        # None: settled by another run of this request or written off (the module says
        # why the result is recorded all the same); an earlier delivery of this very result
        # is stopped by its request marker.
        held = ledger.hold_amount(invocation.batch_id, invocation.hold_id)
    submitted, submitted_bytes = _submitted(notification, store)
    result, object_bytes, failure = _read_result(notification, submitted, store)
    fixed = _request_usage(result, object_bytes) + Usage(
        s3_put_requests=1 if submitted else 0, s3_bytes_written=submitted_bytes
    )
    sums = EndpointThroughput.sums(result.calls) if result else {}
    committed = _commit(
        invocation,
        result,
        held,
        ledger=ledger,
        store=store,
        costing=costing,
        clock=clock,
        extra=fixed + Usage(ddb_write_units=len(sums) * THROUGHPUT_WRITE_UNITS),
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


def _authentic_request(
    notification: AsyncNotification,
    store: ChunkStorePort,
    on_forged: Callable[[ForgedResultError], None] | None,
) -> ChunkInvocation | None:
    """The request the notification answers, read only from where SubmitChunk writes it and
    checked to be that inference's; None (logged, reported) for anything else."""
    try:
        check_locations(notification, store.bucket)
        invocation = ChunkInvocation.model_validate_json(
            store.read_uri(notification.request_parameters.input_location)
        )
        check_request(notification, invocation, store.bucket)
    except ForgedResultError as exc:
        logger.warning("forged result dropped", extra={"reason": str(exc)})
        if on_forged is not None:
            on_forged(exc)
        return None
    return invocation


def _request_usage(result: InvocationResult | None, object_bytes: int | None) -> Usage:
    """What the request itself used outside this Lambda: the notification's SNS publish and
    SQS requests, the request object SageMaker read, the result (or failure) object and the
    PNGs the container wrote."""
    fixed = Usage(
        sns_publishes=SNS_PUBLISHES,
        sqs_requests=SQS_REQUESTS,
        # SageMaker reads the request and writes the result (or failure) object
        s3_get_requests=1,
        s3_put_requests=1 if object_bytes is not None else 0,
        s3_bytes_written=object_bytes or 0,
    )
    written = [image for image in (result.images if result else []) if image.png_bytes]
    return fixed + Usage(
        s3_put_requests=len(written), s3_bytes_written=sum(i.png_bytes for i in written)
    )


def _model(invocation: ChunkInvocation) -> str:
    return invocation.images[0].model if invocation.images else ""


def _commit(
    invocation: ChunkInvocation,
    result: InvocationResult | None,
    held: int | None,
    *,
    ledger: ChunkLedgerPort,
    store: ChunkStorePort,
    costing: EndpointCosting,
    clock: LambdaClock,
    extra: Usage,
    key: str,
    request: InvocationRequest,
    notification: AsyncNotification | None = None,
) -> ChunkResult | None:
    """One transaction: the new image records, the rework, the usage, the hold settled.
    None when this request was recorded before. A capped request without its hold (an
    orphan, see the module) records its images at no charge, from the overhead reserve."""
    # Stays whole (a few lines over 60): one loop of read, price and conditional commit,
    # whose refusals each decide the next try.
    orphan = invocation.hold_id is not None and held is None
    for attempt in range(_COMMIT_TRIES):
        answered = [image.image_id for image in result.images] if result else []
        recorded = ledger.recorded_image_ids(invocation.batch_id, answered) if answered else set()
        outcomes, rework = _price(invocation, result, recorded, costing, orphan=orphan)
        settlement = Settlement(
            chunk_id=invocation.chunk_id,
            hold_id=invocation.hold_id,
            reserved_micro_usd=held or 0,
            has_reservation=held is not None,
            from_overhead_reserve=orphan,
            usage=_commit_usage(invocation, extra, store, ledger, clock, request),
            prices=costing.prices,
            rework_micro_usd=rework,
            request_key=key,
            endpoint=costing.endpoint_name,
            endpoint_request=_endpoint_request(
                invocation, result, notification, key, outcomes, rework
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
            if exc.settled_elsewhere and held is not None and attempt < _COMMIT_TRIES - 1:
                # the hold went between our read and our commit (written off): an orphan
                # now, unless the request's marker refused us (recorded before)
                held = ledger.hold_amount(invocation.batch_id, invocation.hold_id or "")
                orphan = held is None
                if orphan:
                    continue
            if exc.settled_elsewhere or attempt == _COMMIT_TRIES - 1:
                logger.info("result already recorded", extra={"request": key})
                return None
            continue  # another attempt recorded some of these images meanwhile: re-price
        store.meter.take()
        ledger.meter.take()
        request.charged = True
        return _chunk_result(invocation.chunk_id, outcomes, len(recorded))
    return None


def _chunk_result(chunk_id: str, outcomes: list[Outcome], skipped: int) -> ChunkResult:
    return ChunkResult(
        chunk_id=chunk_id,
        succeeded=sum(1 for o in outcomes if o.status == "SUCCEEDED"),
        failed=sum(1 for o in outcomes if o.status == "FAILED"),
        cost_micro_usd=sum(o.cost_micro_usd for o in outcomes),
        skipped_already_done=skipped,
    )


def _commit_usage(  # noqa: PLR0917 - the usage's sources, each read once
    invocation: ChunkInvocation,
    extra: Usage,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    clock: LambdaClock,
    request: InvocationRequest,
) -> Usage:
    """Everything the commit charges: submit's counts (carried in the request object), this
    record's requests so far, `extra`, and this Lambda's duration (its request only once per
    invocation: several records share it)."""
    return (
        Usage(**invocation.submit_usage)
        + store.meter.usage()
        + ledger.meter.usage()
        + extra
        + Usage(
            lambda_requests=0 if request.charged else 1,
            lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb),
        )
    )


def _price(
    invocation: ChunkInvocation,
    result: InvocationResult | None,
    recorded: set[str],
    costing: EndpointCosting,
    *,
    orphan: bool = False,
) -> tuple[list[Outcome], int]:
    """(the outcomes of the images not recorded yet, the rework: what the request's seconds
    for images another attempt recorded cost), each under the endpoint's model; an orphan's
    (see the module) at no charge."""
    if result is None:
        return [], 0
    priced = price_result(
        result,
        invocation.images,
        costing.price,
        recorded=recorded,
        model_label=costing.model or "sagemaker",
    )
    outcomes = priced.outcomes
    if costing.model:
        outcomes = [o.model_copy(update={"model": costing.model}) for o in outcomes]
    if costing.endpoint_model is not None:
        # made images carry their identity, so the commit indexes them for reuse
        jobs = {job.image_id: job for job in invocation.images}
        outcomes = [
            o.model_copy(update={"identity_sha256": costing.identity(jobs[o.image_id])})
            if o.image_id in jobs
            else o
            for o in outcomes
        ]
    if orphan:
        return [o.model_copy(update={"cost_micro_usd": 0}) for o in outcomes], 0
    return outcomes, priced.rework_micro_usd


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


def _submitted(
    notification: AsyncNotification, store: ChunkStorePort
) -> tuple[SubmittedRequest | None, int]:
    """What InvokeEndpointAsync answered for this request (submit keeps it beside the
    input object) and that object's size; None for a request submitted without it."""
    try:
        body = store.read_uri(submitted_key(notification.request_parameters.input_location))
        return SubmittedRequest.model_validate_json(body), len(body)
    except (ObjectMissingError, ValidationError):
        return None, 0


def _read_result(
    notification: AsyncNotification,
    submitted: SubmittedRequest | None,
    store: ChunkStorePort,
) -> tuple[InvocationResult | None, int | None, tuple[str, str] | None]:
    """(what the request did, the size of the object SageMaker wrote, the error to fail the
    token with). A failed request may still carry a partial result: images made and the
    seconds of every call before it failed, in the error body at the FailureLocation
    InvokeEndpointAsync named (AWS's error notification names none)."""
    response = notification.response_parameters
    if notification.invocation_status == "Failed":
        failure_location = response.failure_location or (
            submitted.failure_location if submitted else None
        )
        cause = json.dumps(
            {
                "inference_id": notification.inference_id,
                "failure_reason": notification.failure_reason,
                "failure_location": failure_location,
            }
        )
        if failure_location is None:
            return None, None, (INFERENCE_FAILED, cause)
        try:
            body = store.read_uri(failure_location)
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
    ledger: ChunkLedgerPort,
    tokens: TaskTokensPort,
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
