"""The contact sheet's own cost, charged to its batch.

The sheet runs after finalize has settled the batch, so it settles its own charge: its Lambda
request and duration, the ledger reads, one S3 GET per image made, the chunk files, the sheet
and index PUTs and their bytes, and (when it fails) the state the Catch path enters, in one
ledger commit that also adds the charge to the day's cost rollup.

For a batch with max_cost_usd it holds budget first, like a chunk: the most a run of twice its
expected length can count (data/throughput.json `contact_sheet_seconds`), or what the budget
has left (the rest of the overhead reserve ingest held back for it included) if that is less.
It stops reading thumbnails when 70% of the time held is used, so rendering and writing what
it has fit in the rest; a sheet stopped that way fails (the batch's result stands) and is
charged what it used. With nothing left to hold, the sheet is skipped.

A large batch's sheet spans invocations: between pages, an invocation that has less Lambda
time (or held time) left than twice its slowest page (at least MARGIN_S) stops, records on
the batch where it stopped, settles what it used and raises ContactSheetUnfinished; the
state machine's Retry invokes the function again, which goes on from there (for the same
execution) and holds and settles its own part.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs import budget
from imagebatch.costs.estimate import contact_sheet_usage, load_speed_assumptions
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.transitions import CONTINUATION_TRANSITIONS
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms, price_usage
from imagebatch.errors import (
    BatchNotFoundError,
    ContactSheetOutOfBudgetError,
    ContactSheetUnfinished,
)
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.money import ceil_micro
from imagebatch.pipeline.contact_sheet import (
    ContactSheetEvent,
    ContactSheetResult,
    SheetPosition,
    build_batch_contact_sheet,
)

logger = Logger(child=True)

HOLD_ID = "contact-sheet"
# Reading stops at this share of the held time; rendering and writing use the rest.
READ_SHARE = Decimal("0.7")
# Less than this much Lambda time is not worth holding for: the sheet is skipped.
MIN_SECONDS = Decimal(1)
# An invocation starts another page only with at least this much time left (and twice its
# slowest page so far): Lambda ends an invocation at its timeout, mid-page.
MARGIN_S = 60.0


class ContactSheetCharge(BaseModel):
    batch_id: str
    result: ContactSheetResult | None = None
    charged_micro_usd: int = 0
    held_micro_usd: int | None = None
    skipped: str | None = None


class _Plan(BaseModel):
    seconds: Decimal
    micro_usd: int


def _plan(
    summary: BatchRecord, prices: RegionPrices, memory_mb: int, left: int, images_before: int
) -> _Plan | None:
    """Twice the expected run of the images still to show, or the longest run `left` covers
    (at least MIN_SECONDS)."""
    images = max(0, summary.images_succeeded - images_before)
    chunks = summary.chunks_total or 0

    def cost(seconds: Decimal) -> int:
        usage = contact_sheet_usage(
            images, chunks, seconds=seconds, memory_mb=memory_mb, bound=True
        )
        return ceil_micro(price_usage(usage, prices).total)

    wanted = 2 * load_speed_assumptions().contact_sheet_seconds.for_images(images)
    if cost(wanted) <= left:
        return _Plan(seconds=wanted, micro_usd=cost(wanted))
    per_second = Decimal(cost(Decimal(1001)) - cost(Decimal(1))) / 1000
    seconds = Decimal(math.floor((Decimal(left - cost(Decimal(0))) / per_second) * 1000)) / 1000
    if seconds < MIN_SECONDS:
        return None
    plan = _Plan(seconds=seconds, micro_usd=cost(seconds))
    return plan if plan.micro_usd <= left else None


def build_and_charge(
    event: ContactSheetEvent,
    *,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock,
    remaining_s: Callable[[], float],
) -> ContactSheetCharge:
    """Build the batch's contact sheet (from where this execution's last invocation stopped,
    as far as this invocation's time allows) and charge the batch for it (within its cap);
    or, sent by ContactSheetFailed (`write_off`), write off the holds its attempts left."""
    if event.write_off:
        return _write_off(event, ledger)
    return _build_and_charge(
        event, store=store, ledger=ledger, prices=prices, clock=clock, remaining_s=remaining_s
    )


# Kept whole: hold, build, commit and release are one budget sequence; split, the hold's
# life would be spread over functions that each could forget to release it.
def _build_and_charge(
    event: ContactSheetEvent,
    *,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock,
    remaining_s: Callable[[], float],
) -> ContactSheetCharge:
    summary = ledger.get_batch(event.batch_id)
    if summary is None:
        raise BatchNotFoundError(event.batch_id)
    capped = summary.capped
    start = _start(event, summary)
    hold_id = _hold_id(start.page)
    held: int | None = None
    read_until: float | None = None
    if capped:
        held, seconds = _hold(
            event.batch_id,
            hold_id,
            summary,
            ledger=ledger,
            prices=prices,
            clock=clock,
            images_before=start.images_before,
        )
        if held is None:
            reason = "max_cost_usd reached: the budget left cannot cover the contact sheet"
            logger.warning("contact sheet skipped", extra={"reason": reason})
            return ContactSheetCharge(batch_id=event.batch_id, skipped=reason)
        read_until = clock.elapsed_s() + float(seconds * READ_SHARE)

        def before_read() -> None:
            if clock.elapsed_s() > read_until:
                raise ContactSheetOutOfBudgetError(
                    f"the contact sheet used the {seconds} s of Lambda its budget hold covers"
                )

        store.before_read = before_read

    pages = _PageTimer(clock, remaining_s, read_until)

    def settle(*, failed: bool) -> int:
        return _settle(
            event.batch_id,
            summary,
            held,
            hold_id,
            continued=start.page > 1,
            failed=failed,
            store=store,
            ledger=ledger,
            prices=prices,
            clock=clock,
        )

    try:
        result = build_batch_contact_sheet(
            event, store=store, ledger=ledger, start=start, may_start_page=pages.may_start_page
        )
    except Exception:
        # charged, then raised: the state machine's Catch records the sheet as failed
        settle(failed=True)
        raise
    unfinished = result.next
    if unfinished is not None:
        ledger.save_sheet_position(
            event.batch_id, {"execution": event.execution, **unfinished.model_dump()}
        )
    charged = settle(failed=False)
    if unfinished is not None:
        raise ContactSheetUnfinished(
            f"{result.images} images shown in this invocation; pages from {unfinished.page} "
            "go on in the next"
        )
    return ContactSheetCharge(
        batch_id=event.batch_id, result=result, charged_micro_usd=charged, held_micro_usd=held
    )


class _PageTimer:
    """Whether an invocation has time for another page: twice its slowest page so far (at
    least MARGIN_S) of Lambda time left, and, for a capped batch, of its held time."""

    def __init__(
        self, clock: LambdaClock, remaining_s: Callable[[], float], read_until: float | None
    ) -> None:
        self._clock = clock
        self._remaining_s = remaining_s
        self._read_until = read_until
        self._page_started = clock.elapsed_s()
        self._slowest = 0.0

    def may_start_page(self) -> bool:
        now = self._clock.elapsed_s()
        self._slowest = max(self._slowest, now - self._page_started)
        self._page_started = now
        if self._remaining_s() < max(MARGIN_S, 2 * self._slowest):
            return False
        return self._read_until is None or now + 2 * self._slowest <= self._read_until


def write_off_after_sheet(event: ContactSheetEvent, *, ledger: Ledger) -> int:
    """The batch's final write-off, after its contact sheet failed for good: a sheet
    invocation that died after holding left a hold no commit will settle (a retried page
    writes off its own predecessor's when it holds again, the last one has no retry), so
    every hold left is charged in full as unsettled (an upper bound of what it spent).
    Returns what was written off. This invocation's own request is not charged: nothing
    holds for it after the batch's last step."""
    written = ledger.write_off_holds(event.batch_id)
    if written:
        logger.warning("contact sheet holds written off", extra={"micro_usd": written})
    return written


def _start(event: ContactSheetEvent, summary: BatchRecord) -> SheetPosition:
    """Where this invocation starts: where the last one of the same execution stopped, or
    the first page."""
    stored = summary.contact_sheet_position
    if event.execution is not None and stored is not None and stored.execution == event.execution:
        return SheetPosition(page=stored.page, after_image_id=stored.after_image_id)
    return SheetPosition()


def _write_off(event: ContactSheetEvent, ledger: Ledger) -> ContactSheetCharge:
    """The sheet failed for good: write_off_after_sheet, as this invocation's charge."""
    written_off = write_off_after_sheet(event, ledger=ledger)
    return ContactSheetCharge(
        batch_id=event.batch_id, charged_micro_usd=written_off, skipped="the contact sheet failed"
    )


def _hold_id(page: int) -> str:
    """One hold per invocation: the first keeps the name earlier stacks used."""
    return HOLD_ID if page == 1 else f"{HOLD_ID}-p{page}"


def _hold(
    batch_id: str,
    hold_id: str,
    summary: BatchRecord,
    *,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock,
    images_before: int,
) -> tuple[int | None, Decimal]:
    """Hold for the sheet from what the settled batch has left, its overhead reserve
    included (nothing else spends after finalize)."""
    left = summary.budget_left_micro_usd
    reserve = summary.overhead_reserve_micro_usd
    room = budget.last_spender_room(left, reserve)
    plan = _plan(summary, prices, clock.memory_mb, room, images_before)
    if plan is None:
        return None, Decimal(0)
    if plan.micro_usd > left and not ledger.release_overhead_reserve(batch_id, reserve):
        return None, Decimal(0)
    held = ledger.reserve(batch_id, hold_id, plan.micro_usd)
    return held, plan.seconds


def _settle(
    batch_id: str,
    summary: BatchRecord,
    held: int | None,
    hold_id: str,
    *,
    continued: bool,
    failed: bool,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock,
) -> int:
    """One commit: the sheet's usage charged to the batch and its hold settled."""
    usage = (
        store.meter.take()
        + ledger.meter.take()
        + Usage(
            # a continuation is its task's retry; a failed sheet's Catch enters
            # ContactSheetFailed
            sfn_transitions=(CONTINUATION_TRANSITIONS if continued else 0) + (1 if failed else 0),
            lambda_requests=1,
            lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb),
        )
    )
    settlement = Settlement(
        chunk_id=hold_id,
        hold_id=hold_id,
        reserved_micro_usd=held or 0,
        has_reservation=held is not None,
        usage=usage,
        prices=prices,
        chunk_commit=False,
    )
    models = summary.models or ["(none)"]
    charged = ledger.commit_images(
        batch_id,
        [],
        settlement,
        tags=summary.tags or None,
        capped=summary.capped,
        rollup_model=str(models[0]),
    )
    logger.info("contact sheet charged", extra={"micro_usd": charged, "held": held})
    return charged
