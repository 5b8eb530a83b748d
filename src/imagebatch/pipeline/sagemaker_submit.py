"""SageMaker branch of a chunk, first half: submit it with its task token.

submit_chunk runs inside `lambda:invoke.waitForTaskToken`: it never answers the state machine
itself unless there is nothing left to make or the budget cannot hold the chunk; the answer
comes from pipeline.sagemaker_result when the endpoint's notification arrives.

Budget (a batch with max_cost_usd), as on the Bedrock path: submit_chunk holds an upper bound of
what the attempt can charge (the instance-seconds the container may use plus one stopped call,
both Lambdas, messages, requests, storage) before InvokeEndpointAsync, under a hold id of its
own, since a request can outlive its attempt; the container uses no more instance-seconds than
the hold covers; record_result settles that hold to the actual charge in its commit. A hold is
released when its request cannot be submitted, and a hold no result settles is written off by
finalize as spent, so spent + held + left + reserve = cap throughout.
"""

from __future__ import annotations

import hashlib

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.ledger_holds import hold_write_units
from imagebatch.aws.ports import (
    AsyncEndpointPort,
    ChunkLedgerPort,
    ChunkStorePort,
    TaskTokensPort,
)
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.sagemaker_path import HoldPlan, HoldSizer
from imagebatch.costs.sagemaker_seconds import ExpectedSeconds, expected_seconds
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import ChunkFile, ChunkResult, ChunkTask, ImageJob
from imagebatch.models.sagemaker_contract import ChunkInvocation, shape_key
from imagebatch.pipeline.budget_refusal import refuse_for_budget
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.pipeline.sagemaker_reuse import reuse_before_submit

logger = Logger(child=True)

INPUT_PREFIX = "async-inputs/"
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
    # images copied from an earlier batch's image of the same identity, not sent
    reused: int = 0


def inference_id_for(task: SubmitTask) -> str:
    """Stable per token, so a re-invoked submit Lambda writes and submits the same request."""
    digest = hashlib.sha256(task.task_token.encode()).hexdigest()[:24]
    return f"{task.chunk.chunk_id}-{task.retry_count + 1}-{digest}"


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
) -> SubmitReceipt:
    """`reuse` (the stack's ReuseImages): images some batch already made are copied first
    (pipeline.sagemaker_reuse) and only the rest are sent."""
    chunk = store.get_chunk(task.chunk.key)
    done = ledger.recorded_image_ids(task.batch_id, [job.image_id for job in chunk.images])
    todo = [job for job in chunk.images if job.image_id not in done]
    if not todo:
        # A retry after the images were recorded: nothing to send, answer the token now.
        return _answer_done(task, chunk.chunk_id, len(done), tokens)
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
    inference_id = inference_id_for(task)
    invocation, expected = _invocation(task, chunk, todo, costing)
    held: int | None = None
    if capped:
        # Hold the most this attempt can charge before anything is spent on it.
        sizer = _sizer(
            invocation,
            expected,
            hold=(task.batch_id, inference_id),
            store=store,
            ledger=ledger,
            clock=clock,
            costing=costing,
        )
        granted = _reserve(ledger, task.batch_id, inference_id, sizer, summary)
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
    )


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
) -> SubmitReceipt:
    """Write the request object and submit it; a request that never reaches the endpoint
    releases its hold (settled at what submit spent) before the error goes up."""
    key = f"{INPUT_PREFIX}{invocation.batch_id}/{inference_id}.json"
    input_location = f"s3://{invocation.bucket}/{key}"
    body, invocation = _request_body(invocation, store, ledger, clock)
    store.put_json(key, body)
    try:
        output_location = endpoint.submit(input_location, inference_id)
    except Exception:
        if held is not None:
            _release(invocation, held, ledger, prices)
        raise
    logger.info(
        "chunk submitted",
        extra={
            "inference_id": inference_id,
            "output_location": output_location,
            "images": len(invocation.images),
            "held_micro_usd": held,
            "max_seconds": invocation.max_seconds,
        },
    )
    return SubmitReceipt(
        inference_id=inference_id,
        input_location=input_location,
        images=len(invocation.images),
        skipped_already_done=skipped,
        held_micro_usd=held,
    )


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


def _sizer(
    invocation: ChunkInvocation,
    expected: ExpectedSeconds,
    *,
    hold: tuple[str, str],
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    clock: LambdaClock,
    costing: EndpointCosting,
) -> HoldSizer:
    """What sizes the hold: the request's images at their expected seconds, and submit's own
    usage, the hold's write, the request PUT and the rest of submit's Lambda included."""
    return HoldSizer(
        invocation.images,
        expected,
        costing.price,
        costing.prices,
        path=costing.path,
        submit=_submit_usage(store, ledger, clock, hold=hold)
        + Usage(
            s3_put_requests=1,
            s3_bytes_written=len(invocation.model_dump_json()) + _COUNTS_BYTES,
            lambda_mb_ms=SUBMIT_TAIL_S * 1000 * clock.memory_mb,
        ),
    )


def _reserve(
    ledger: ChunkLedgerPort,
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
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
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
    invocation: ChunkInvocation, store: ChunkStorePort, ledger: ChunkLedgerPort, clock: LambdaClock
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


def _release(
    invocation: ChunkInvocation, held: int, ledger: ChunkLedgerPort, prices: RegionPrices
) -> None:
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
        chunk_id=chunk.chunk_id, usage=_submit_usage(store, ledger, clock), prices=prices
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
