"""SubmitChunk's budget hold: what sizes it, its reservation, its release when nothing was
queued, and the counts the request object carries so RecordResult charges submit's own usage
(pipeline.sagemaker_submit says when each runs)."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from imagebatch.aws.ledger_holds import hold_write_units
from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.sagemaker_path import HoldPlan, HoldSizer
from imagebatch.costs.sagemaker_seconds import ExpectedSeconds
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.sagemaker_contract import ChunkInvocation
from imagebatch.pipeline.sagemaker_costing import EndpointCosting

logger = Logger(child=True)

# A hold covers submit as counted when it is sized, plus this much more of its Lambda (the
# hold's own write and the request PUT) and this many bytes of counts in the request object.
SUBMIT_TAIL_S = 2
_COUNTS_BYTES = 1024


def sizer(
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
        submit=submit_usage(store, ledger, clock, hold=hold)
        + Usage(
            s3_put_requests=1,
            s3_bytes_written=len(invocation.model_dump_json()) + _COUNTS_BYTES,
            lambda_mb_ms=SUBMIT_TAIL_S * 1000 * clock.memory_mb,
        ),
    )


def reserve(
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


def submit_usage(
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


def request_body(
    invocation: ChunkInvocation,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    clock: LambdaClock,
    earlier: Usage | None = None,
) -> tuple[bytes, ChunkInvocation]:
    """The request object, carrying what submit counted (its hold, if any, is on the meter by
    now), the request's own PUT and bytes included, plus `earlier` (what the submits before
    this one counted, for a request a retry points at its token). The size settles within
    two passes: the counts' digits change it by a few bytes."""
    usage = submit_usage(store, ledger, clock) + (earlier or Usage())
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


def release(
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
