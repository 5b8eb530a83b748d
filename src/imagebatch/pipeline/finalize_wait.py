"""What a finalize run that waits for endpoint results costs, charged to its batch.

Finalize raises EndpointResultsPending while a failed chunk's endpoint request may still
answer (pipeline.endpoint_inflight), and FinalizeBatch's Retry runs it again, for up to
8,715 s: tens of runs, each a Lambda request and its billed duration, the reads and LISTs
that found the request still out, and the Retry's state transition. Each such run charges
what it used before it raises, the way finalize charges itself when it settles: its meters'
counts priced through costs.usage.price_usage, rounded up once, from the overhead reserve
ingest held back, as finalize's own charge is.

A capped batch's cap stays hard: its reserve also keeps what finalize's settle and the
contact sheet will charge (the parts ingest reserved for them, costs.estimate), so a waiting
run is charged only while the reserve has that much to spare besides; past it, the run is
logged and not charged. Holding every possible wait at ingest instead (35 runs, their LISTs
and reads) would reserve more than a small endpoint batch costs, and refuse it under a cap
that fits its images.

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
from imagebatch.costs.estimate import Shape, batch_usage, contact_sheet_reserve
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.usage import (
    LambdaClock,
    Usage,
    billed_mb_ms,
    price_usage,
    rollup_write_units,
    summary_write_units,
    tags_bytes,
    write_units,
)
from imagebatch.errors import EndpointResultsPending, ImagesAlreadyRecordedError, StorageError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.money import ceil_micro
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
    spare = _spare_reserve(summary, prices, clock)
    if spare is not None and _expected_charge(summary, usage, prices) > spare:
        logger.warning(
            "finalize wait not charged: the overhead reserve keeps the rest for finalize",
            extra={"run": run, "spare_micro_usd": spare},
        )
        return 0
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


def _expected_charge(summary: BatchRecord, usage: Usage, prices: RegionPrices) -> int:
    """What the charge's commit will charge: the usage and its own writes (the marker, the
    summary and the day's rollup at the batch's tags, as aws.ledger.commit_images counts
    them), priced and rounded up as it prices them."""
    tag_bytes = tags_bytes(summary.tags)
    own = (
        write_units(0, transactional=True)
        + summary_write_units(tag_bytes)
        + rollup_write_units(tag_bytes)
    )
    return ceil_micro(price_usage(usage + Usage(ddb_write_units=own), prices).total)


def _spare_reserve(
    summary: BatchRecord, prices: RegionPrices, clock: LambdaClock | None
) -> int | None:
    """What a capped batch's overhead reserve (as read) holds besides the parts ingest
    reserved for finalize's settle and the contact sheet; None: uncapped, no limit."""
    if not summary.capped:
        return None
    shape = Shape() if clock is None else Shape(finalize_memory_mb=clock.memory_mb)
    kept = batch_usage(0, 0, shape, tags_bytes(summary.tags)) + contact_sheet_reserve(
        summary.images_total, summary.chunks_total or 0, shape
    )
    return summary.overhead_reserve_micro_usd - ceil_micro(price_usage(kept, prices).total)
