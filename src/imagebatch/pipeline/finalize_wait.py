"""What a finalize run that waits for endpoint results costs, charged to its batch.

Finalize raises EndpointResultsPending while a failed chunk's endpoint request may still
answer (pipeline.endpoint_inflight), and FinalizeBatch's Retry runs it again, for up to
8,715 s: tens of runs, each a Lambda request and its billed duration, the reads and LISTs
that found the request still out, and the Retry's state transition. Each such run charges
what it used before it raises, the way finalize charges itself when it settles: its meters'
counts priced through costs.usage.price_usage, rounded up once, from the overhead reserve
ingest held back (for a batch with endpoint chunks it holds every run that may wait:
costs.sagemaker_path.finalize_wait_bound; past it, counted over cap, as finalize's own
charge is).

The charge is one ledger commit without images (aws.ledger.commit_images): the summary's
counters and spent, today's rollup, and a marker `REQUEST#finalize-wait#<run>` conditional
on not existing, in one transaction under a ClientRequestToken. A resend after a lost reply
is answered as done (or refused by its own marker, which the commit recognises): a run is
charged once. A charge DynamoDB refuses past the commit's retries is logged and dropped,
never raised: the run still waits (failing finalize over its own bookkeeping would fail the
batch), and that run is not charged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms
from imagebatch.errors import EndpointResultsPending, ImagesAlreadyRecordedError, StorageError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.pipeline.endpoint_inflight import wait_for_endpoint_results

logger = Logger(child=True)

#: The line a waiting run's charge is recorded under (its marker's key, the commit's chunk).
WAIT_LINE = "finalize-wait"
#: A waiting run ends in FinalizeBatch's Retry (the state entered again) or, after its
#: last attempt, in its Catch (SettleWithError entered): one transition either way.
WAIT_TRANSITIONS = 1


def wait_charged(
    summary: BatchRecord,
    markers: Mapping[str, Mapping[str, Any]],
    now: Callable[[], datetime],
    *,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock | None,
) -> None:
    """Raise EndpointResultsPending while a failed chunk's endpoint request may still answer
    (endpoint_inflight.wait_for_endpoint_results), after charging this run to the batch."""
    try:
        wait_for_endpoint_results(summary.batch_id, store, ledger, markers, now)
    except EndpointResultsPending:
        charge_waiting_run(summary, store=store, ledger=ledger, prices=prices, clock=clock)
        raise


def charge_waiting_run(
    summary: BatchRecord,
    *,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock | None,
) -> int:
    """Charge what this run used (everything its store and ledger counted, its Lambda
    request and duration, the transition that follows) to the batch, once; returns the
    charge (0 when it was charged before, or could not be)."""
    usage = store.meter.take() + ledger.meter.take() + Usage(sfn_transitions=WAIT_TRANSITIONS)
    if clock is not None:
        usage += Usage(
            lambda_requests=1, lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb)
        )
    run = (clock.request_id if clock is not None else None) or uuid.uuid4().hex
    settlement = Settlement(
        chunk_id=WAIT_LINE,
        usage=usage,
        prices=prices,
        # finalize's own bookkeeping: from the reserve ingest held back for it, as read
        from_overhead_reserve=True,
        overhead_reserve_left=summary.overhead_reserve_micro_usd,
        request_key=f"{WAIT_LINE}#{run}",
        chunk_commit=False,
    )
    try:
        charged = ledger.commit_images(
            summary.batch_id,
            [],
            settlement,
            tags=summary.tags or None,
            capped=summary.capped,
            rollup_model=str((summary.models or ["(none)"])[0]),
        )
    except ImagesAlreadyRecordedError:
        logger.info("finalize wait charged before", extra={"run": run})
        return 0
    except StorageError as exc:
        logger.error("finalize wait not charged", extra={"run": run, "error": str(exc)})
        return 0
    logger.info("finalize wait charged", extra={"run": run, "micro_usd": charged})
    return charged
