"""SageMaker branch of a chunk, first half: submit it with its task token.

submit_chunk runs inside `lambda:invoke.waitForTaskToken`: it never answers the state machine
itself unless there is nothing left to make or the budget cannot hold the chunk; the answer
comes from pipeline.sagemaker_result when the endpoint's notification arrives.

Budget (a batch with max_cost_usd), as on the Bedrock path: submit_chunk holds an upper bound of
what the attempt can charge (the instance-seconds the container may use plus one stopped call,
both Lambdas, messages, requests, storage) before InvokeEndpointAsync, under a hold id of its
own, since a request can outlive its attempt; the container uses no more instance-seconds than
the hold covers; record_result settles that hold to the actual charge in its commit. A hold is
released when SageMaker refused its request, and a hold no result settles is written off by
finalize as spent, so spent + held + left + reserve = cap throughout.

An ambiguous submit (no answer: a connection error or a timeout) may have queued the request,
so it keeps its hold and its token waits: the result answers it, or, if nothing was queued,
the heartbeat timeout (which covers the request's TTL: by then it can no longer run) has the
state machine submit the chunk again; a hold no result settled is written off by finalize.

Throttles and 5xx of S3 (the request object) and of InvokeEndpointAsync, and connection
errors, are retried here with jittered backoff while the invocation has time left (every try
of one request keeps its InferenceId); what still fails takes the stored request's token
away and releases the hold (nothing was queued), then raises ChunkUnfinished, which the state
machine retries like a Bedrock chunk's.

A chunk is one request per attempt whatever the task token: a retry of SubmitChunk (its
Lambda killed after InvokeEndpointAsync) finds the chunk's latest request still live, sends
nothing and points it at its own token (pipeline.sagemaker_requests).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import NoReturn

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.ports import (
    AsyncEndpointPort,
    ChunkLedgerPort,
    ChunkStorePort,
    TaskTokensPort,
)
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.sagemaker_path import invocation_timeout_s
from imagebatch.costs.sagemaker_seconds import ExpectedSeconds, expected_seconds
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.usage import LambdaClock, Usage
from imagebatch.errors import ChunkUnfinished, EndpointSubmitError, StorageError
from imagebatch.models.records import ChunkFile, ChunkResult, ChunkTask, FailureClass, ImageJob
from imagebatch.models.sagemaker_contract import (
    ChunkInvocation,
    SubmittedRequest,
    shape_key,
    submitted_key,
)
from imagebatch.pipeline.budget_refusal import refuse_for_budget
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.pipeline.sagemaker_requests import live_request, request_id, request_key, resume
from imagebatch.pipeline.sagemaker_reuse import reuse_before_submit
from imagebatch.pipeline.sagemaker_submit_budget import (
    release,
    request_body,
    reserve,
    sizer,
    submit_usage,
)
from imagebatch.pipeline.sagemaker_submit_retry import retrying

logger = Logger(child=True)

INPUT_PREFIX = "async-inputs/"

# SageMaker's largest InvocationTimeoutSeconds; the adapter also keeps the stack's own.
_MAX_TIMEOUT_S = 3600


class SubmitTask(ChunkTask):
    """The SubmitChunk state's payload: the Map item plus its task token (and, as every
    chunk task, its retry count)."""

    task_token: str


class SubmitReceipt(BaseModel):
    inference_id: str | None
    input_location: str | None
    images: int
    skipped_already_done: int
    held_micro_usd: int | None = None
    refused: bool = False
    # images copied from an earlier batch's image of the same identity, not sent
    reused: int = 0
    # InvokeEndpointAsync got no answer: the request may be queued (see the module)
    uncertain: bool = False
    # the chunk's request was still live: pointed at this token, nothing sent
    resumed: bool = False


# Kept whole (about 90 lines): its steps are helpers already (reuse, invocation, sizer,
# reserve, refuse, send); what is left is their order, which the budget invariant depends on.
def submit_chunk(
    task: SubmitTask,
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    endpoint: AsyncEndpointPort,
    tokens: TaskTokensPort,
    costing: EndpointCosting,
    clock: LambdaClock,
    reuse: bool = True,
    time_left_s: Callable[[], float] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SubmitReceipt:
    """Submit the chunk's images still to make. `reuse` (the stack's ReuseImages): images
    some batch already made are copied first (pipeline.sagemaker_reuse) and only the rest
    are sent. `time_left_s`: the invocation's seconds left, which bound the retries of
    throttled calls; None: unbounded but SUBMIT_TRIES. A chunk whose latest request may
    still answer sends nothing: that request answers this task's token instead
    (pipeline.sagemaker_requests)."""
    # Stays whole (a few lines over 60): read, hold or refuse, reuse, send, in the order the
    # budget's invariant needs them, each step already a function of its own.
    chunk = store.get_chunk(task.chunk.key)
    done = ledger.recorded_image_ids(task.batch_id, [job.image_id for job in chunk.images])
    todo = [job for job in chunk.images if job.image_id not in done]
    if not todo:
        # A retry after the images were recorded: nothing to send, answer the token now.
        return _answer_done(task, chunk.chunk_id, len(done), tokens)
    number, live = live_request(store, task.batch_id, chunk.chunk_id, now(), time_left_s)
    if live is not None:
        inference_id = resume(
            live,
            number,
            task.task_token,
            store=store,
            ledger=ledger,
            clock=clock,
            time_left_s=time_left_s,
        )
        return SubmitReceipt(
            inference_id=inference_id,
            input_location=f"s3://{store.bucket}/{request_key(task.batch_id, inference_id)}",
            images=len(live.images),
            skipped_already_done=len(done),
            resumed=True,
        )
    summary = ledger.get_batch(task.batch_id)
    capped = summary is not None and summary.capped
    if reuse and costing.endpoint_model is not None:
        reused = reuse_before_submit(
            chunk,
            todo,
            attempt=task.retry_count + 1,
            capped=capped,
            store=store,
            ledger=ledger,
            costing=costing,
            clock=clock,
        )
        if reused:
            copied = {o.image_id for o in reused}
            todo = [job for job in todo if job.image_id not in copied]
            if not todo:
                result = ChunkResult.of(chunk.chunk_id, reused, skipped=len(done))
                tokens.succeed(task.task_token, result.model_dump_json())
                return SubmitReceipt(
                    inference_id=None,
                    input_location=None,
                    images=0,
                    skipped_already_done=len(done),
                    reused=len(reused),
                )
            # the copies' commit moved the budget: hold against what is left now
            summary = ledger.get_batch(task.batch_id) if capped else summary
    inference_id = request_id(task.batch_id, chunk.chunk_id, number)
    invocation, expected = _invocation(task, chunk, todo, costing)
    held: int | None = None
    if capped:
        # Hold the most this attempt can charge before anything is spent on it.
        hold_sizer = sizer(
            invocation,
            expected,
            hold=(task.batch_id, inference_id),
            store=store,
            ledger=ledger,
            clock=clock,
            costing=costing,
        )
        granted = reserve(ledger, task.batch_id, inference_id, hold_sizer, summary)
        if granted is None:
            return _refuse(
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
    return _send(
        invocation,
        held,
        inference_id=inference_id,
        skipped=len(done),
        store=store,
        ledger=ledger,
        endpoint=endpoint,
        prices=costing.prices,
        clock=clock,
        time_left_s=time_left_s,
    )


def _give_up(  # noqa: PLR0917 - the request, where it is stored, its hold and the error
    invocation: ChunkInvocation,
    key: str,
    held: int | None,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    prices: RegionPrices,
    exc: StorageError | EndpointSubmitError,
) -> NoReturn:
    """Nothing was queued: the stored request loses its token (the next attempt sends a new
    one, pipeline.sagemaker_requests), the hold is released, then a transient failure goes
    back to the state machine as ChunkUnfinished (every image of the request, throttled),
    which it retries."""
    unsent = invocation.model_copy(update={"task_token": None}).model_dump_json(exclude_none=True)
    try:
        store.put_json(key, unsent.encode())
        put = Usage(s3_put_requests=1, s3_bytes_written=len(unsent))
        counted = Usage(**invocation.submit_usage) + put
        invocation = invocation.model_copy(update={"submit_usage": counted.model_dump()})
    except StorageError as err:
        # S3 is out too: the next attempt waits for this request until the heartbeat
        logger.warning("unsent request not marked", extra={"error": str(err)})
    if held is not None:
        release(invocation, held, ledger, prices)
    if not exc.transient:
        raise exc
    logger.warning("chunk not submitted; the state machine retries it", extra={"error": str(exc)})
    unfinished = {job.image_id: FailureClass.THROTTLED for job in invocation.images}
    raise ChunkUnfinished(unfinished) from exc


def _keep_answer(
    submitted: SubmittedRequest,
    key: str,
    store: ChunkStorePort,
    time_left_s: Callable[[], float] | None,
) -> None:
    """InvokeEndpointAsync's answer beside the request, where record_result reads the
    failure location (and charges this PUT, with its size)."""
    answer = submitted.model_dump_json().encode()
    try:
        retrying(lambda: store.put_json(key, answer), time_left_s)
    except StorageError as exc:
        # the request is queued: its result is still recorded, only a failure's partial
        # result would be missed
        logger.warning("submit's answer not kept", extra={"error": str(exc)})


def _answer_done(
    task: SubmitTask, chunk_id: str, done: int, tokens: TaskTokensPort
) -> SubmitReceipt:
    result = ChunkResult.already_done(chunk_id, done)
    tokens.succeed(task.task_token, result.model_dump_json())
    return SubmitReceipt(
        inference_id=None, input_location=None, images=0, skipped_already_done=done
    )


def _send(
    invocation: ChunkInvocation,
    held: int | None,
    *,
    inference_id: str,
    skipped: int,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    endpoint: AsyncEndpointPort,
    prices: RegionPrices,
    clock: LambdaClock,
    time_left_s: Callable[[], float] | None = None,
) -> SubmitReceipt:
    """Write the request object and submit it; a request SageMaker refused releases its hold
    (settled at what submit spent) before the error goes up; one that may have been queued
    keeps it (the module says why)."""
    key = f"{INPUT_PREFIX}{invocation.batch_id}/{inference_id}.json"
    input_location = f"s3://{invocation.bucket}/{key}"
    body, invocation = request_body(invocation, store, ledger, clock)
    try:
        retrying(lambda: store.put_json(key, body), time_left_s)
    except StorageError as exc:
        _give_up(invocation, key, held, store, ledger, prices, exc)
    receipt = SubmitReceipt(
        inference_id=inference_id,
        input_location=input_location,
        images=len(invocation.images),
        skipped_already_done=skipped,
        held_micro_usd=held,
    )
    try:
        # a capped request (every one under DefaultMaxCostUsd) ends past its hold
        timeout_s = (
            invocation_timeout_s(Decimal(str(invocation.max_seconds)), _MAX_TIMEOUT_S)
            if invocation.max_seconds is not None
            else None
        )
        submitted = retrying(
            lambda: endpoint.submit(input_location, inference_id, timeout_s), time_left_s
        )
    except EndpointSubmitError as exc:
        if exc.ambiguous:
            logger.warning(
                "submit unanswered: the request may be queued; its hold is kept",
                extra={"inference_id": inference_id, "error": str(exc)},
            )
            return receipt.model_copy(update={"uncertain": True})
        _give_up(invocation, key, held, store, ledger, prices, exc)
    _keep_answer(submitted, submitted_key(key), store, time_left_s)
    logger.info(
        "chunk submitted",
        extra={
            "inference_id": inference_id,
            "output_location": submitted.output_location,
            "images": len(invocation.images),
            "held_micro_usd": held,
            "max_seconds": invocation.max_seconds,
        },
    )
    return receipt


def _invocation(
    task: SubmitTask, chunk: ChunkFile, todo: list[ImageJob], costing: EndpointCosting
) -> tuple[ChunkInvocation, ExpectedSeconds]:
    """The request for `todo`, with the seconds per image the endpoint is expected to take
    (its own measurements where it has them: they size the hold and bound the container)."""
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
    return invocation, expected


def _refuse(
    task: SubmitTask,
    chunk: ChunkFile,
    todo: list[ImageJob],
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    tokens: TaskTokensPort,
    clock: LambdaClock,
    prices: RegionPrices,
) -> SubmitReceipt:
    """The budget cannot cover the chunk: record its images, send nothing, answer the token."""
    # the overhead reserve as it is now, read before the usage is taken (the commit charges it)
    summary = ledger.get_batch(task.batch_id)
    settlement = Settlement(
        chunk_id=chunk.chunk_id, usage=submit_usage(store, ledger, clock), prices=prices
    )
    # A late result of an earlier attempt may have recorded some of them meanwhile.
    result = refuse_for_budget(
        task.batch_id,
        chunk,
        todo,
        settlement,
        ledger=ledger,
        backend="sagemaker",
        late_results_possible=True,
        overhead_reserve_left=summary.overhead_reserve_micro_usd if summary else None,
    )
    tokens.succeed(task.task_token, result.model_dump_json())
    return SubmitReceipt(
        inference_id=None,
        input_location=None,
        images=0,
        skipped_already_done=len(chunk.images) - len(todo),
        refused=True,
    )
