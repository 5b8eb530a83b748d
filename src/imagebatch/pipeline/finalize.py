"""Finalize: account for every image, set the batch status, write the report.

The batch pipeline knows nothing of what a batch is for: whoever needs to act on a finished
batch (the nightly catalog publishes its variants) passes a `BatchFinalizedHook`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, chunk_key
from imagebatch.costs import budget
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.terms import charge_note
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import (
    LambdaClock,
    Usage,
    billed_mb_ms,
    per_image,
    price_usage,
    summary_costs,
)
from imagebatch.errors import BatchNotFoundError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.money import ceil_micro
from imagebatch.models.records import BatchStatus, ChunkFile, FailureClass, ImageJob, ImageOutcome
from imagebatch.pipeline.finalize_hooks import BatchFinalizedHook, after_settle
from imagebatch.pipeline.finalize_wait import wait_charged
from imagebatch.pipeline.pending import commit_pending
from imagebatch.pipeline.sagemaker_result import INCOMPLETE_RESULT
from imagebatch.pipeline.stored_images import record_stored_images

logger = Logger(child=True)


class FinalizeEvent(BaseModel):
    batch_id: str
    bucket: str
    chunk_index_key: str
    map_error: dict[str, Any] | None = None


class BatchReport(BaseModel):
    batch_id: str
    status: BatchStatus
    images_total: int
    images_succeeded: int
    images_failed: int
    cost_micro_usd: int
    estimate_micro_usd: int
    failures_by_class: dict[str, int]
    # micro-dollars by category (inference, orchestration, storage, total), per image and
    # per 1,000 images made
    costs: dict[str, int] = {}
    # what the budget was charged (the ledger's spent), the cap, and why charged and the
    # categories' total differ when they do (costs/terms.py)
    charged_micro_usd: int = 0
    max_cost_micro_usd: int | None = None
    charge_note: str | None = None
    cost_per_image: dict[str, int] = {}
    cost_per_1000: dict[str, int] = {}
    failed_key: str | None = None
    redrive_key: str | None = None
    errors_key: str | None = None


def _marker_cause(marker: dict[str, Any]) -> str:
    """The chunk's error Cause: RecordChunkFailure stores the whole error output as JSON in
    `error_detail` (it may have no Cause); markers written before that carry `cause`."""
    detail = marker.get("error_detail")
    if detail is None:
        return str(marker.get("cause", ""))
    try:
        parsed = json.loads(str(detail))
    except ValueError:
        return str(detail)
    return str(parsed.get("Cause", "")) if isinstance(parsed, dict) else str(detail)


def _class_from_chunk_error(
    marker: dict[str, Any] | None, image_id: str
) -> tuple[FailureClass, str]:
    if marker is None:
        return FailureClass.MODEL_ERROR, "the chunk never reported back"
    error, cause = str(marker.get("error", "")), _marker_cause(marker)
    if error == "ChunkUnfinished":
        unfinished = _unfinished_classes(cause)
        failure_class = unfinished.get(image_id, FailureClass.THROTTLED)
        return failure_class, f"{error} after retries"
    if "Timeout" in error or "Timedout" in error:
        return FailureClass.TIMEOUT, error
    if error == INCOMPLETE_RESULT and _stopped_by_hold(cause):
        # The endpoint stopped because the chunk's budget hold ran out, on every attempt.
        return FailureClass.BUDGET_EXHAUSTED, f"{error}: {cause[:500]}"
    return FailureClass.MODEL_ERROR, f"{error}: {cause[:500]}"


def _stopped_by_hold(cause: str) -> bool:
    """Whether a SageMaker.IncompleteResult's cause (record_result's JSON) says the request
    stopped at its budget hold."""
    try:
        return bool(json.loads(cause).get("stopped"))
    except (ValueError, AttributeError):
        return False


def _unfinished_classes(cause: str) -> dict[str, FailureClass]:
    """The per-image classes a ChunkUnfinished carried. Lambda puts the exception in the
    error's Cause as {"errorMessage": ..., "errorType": ...}, and ChunkUnfinished's message is
    itself JSON (errors.ChunkUnfinished), hence two decodes; anything else yields none."""
    try:
        lambda_error = json.loads(cause)
        message = json.loads(lambda_error["errorMessage"])
        return {k: FailureClass(v) for k, v in message["unfinished"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


Markers = dict[str, dict[str, Any]]  # failed chunks' CHUNK# records, by chunk id


def _record_lost_images(
    event: FinalizeEvent, store: BatchStore, ledger: Ledger, markers: Markers, prices: RegionPrices
) -> None:
    """Images no chunk committed (a chunk that failed for good) are recorded as failed.

    Chunk by chunk (a BatchGetItem of its image ids), so memory stays flat at any batch size;
    this runs only when the summary counts fewer images than the batch has. A chunk's
    pending file is committed first: an attempt refused by the fence leaves its made images
    there."""
    for ref in store.get_chunk_index(event.batch_id):
        chunk = store.get_chunk(ref.key)
        ids = [job.image_id for job in chunk.images]
        if len(ledger.recorded_image_ids(event.batch_id, ids)) == len(ids):
            continue
        commit_pending(store, ledger, event.batch_id, ref.chunk_id, prices)
        recorded = ledger.recorded_image_ids(event.batch_id, ids)
        lost = [job for job in chunk.images if job.image_id not in recorded]
        if not lost:
            continue
        outcomes = []
        for job in lost:
            failure_class, reason = _class_from_chunk_error(markers.get(ref.chunk_id), job.image_id)
            outcomes.append(_failed(job, chunk, failure_class, reason))
        logger.warning("recording lost images", extra={"chunk_id": ref.chunk_id, "n": len(lost)})
        ledger.commit_images(event.batch_id, outcomes)


def _failed(
    job: ImageJob, chunk: ChunkFile, failure_class: FailureClass, reason: str
) -> ImageOutcome:
    return ImageOutcome.failed(
        job,
        chunk_id=chunk.chunk_id,
        backend=chunk.backend,
        failure_class=failure_class,
        reason=reason,
    )


_FAILED_FIELDS = (
    "image_id",
    "item_id",
    "chunk_id",
    "failure_class",
    "failure_reason",
    "model",
    "seed",
)


def _failed_line(record: Mapping[str, Any]) -> str:
    return json.dumps({k: record.get(k) for k in _FAILED_FIELDS})


def _redrive_line(job: ImageJob) -> str:
    """One failed image as a manifest item that remakes exactly that image."""
    item: dict[str, Any] = {
        "id": job.image_id,
        "prompt": job.prompt,
        "width": job.width,
        "height": job.height,
        "seed": job.seed,
        "model": job.model,
    }
    if job.negative_prompt:
        item["negative_prompt"] = job.negative_prompt
    if job.steps is not None:
        item["steps"] = job.steps
    if job.guidance is not None:
        item["guidance"] = job.guidance
    if job.tags:
        item["tags"] = job.tags
    return json.dumps(item)


# finalize_batch stays whole (about 80 lines): each step is a helper already; what is left is
# their order (the once-only check, the fence, account, report, settle, hooks), which its
# idempotence depends on and which reads best in one place.
def finalize_batch(
    event: FinalizeEvent,
    *,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock | None = None,
    hooks: Sequence[BatchFinalizedHook] = (),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BatchReport:
    summary = ledger.get_batch(event.batch_id)
    if summary is None:
        raise BatchNotFoundError(event.batch_id)
    if summary.status not in (None, BatchStatus.RUNNING):
        # Run again after it settled (its reply lost, a Sandbox.Timedout after the settle):
        # the report it wrote, with nothing charged or published twice.
        logger.warning("batch already finalized", extra={"status": summary.status})
        # the run that settled may have stopped before its roll-up (adds only what is missing)
        ledger.roll_up_remainder(event.batch_id, summary)
        # ... and before its wake release and hooks (Batch Finished): those run now
        after_settle(hooks, event.batch_id, summary, ledger)
        return _stored_report(store, summary)
    if summary.images_succeeded + summary.images_failed < summary.images_total:
        # not before a failed chunk's endpoint request that may still make its images
        # answers; a run that waits charges what it used (pipeline/finalize_wait.py)
        markers = ledger.failed_chunks(event.batch_id)
        wait_charged(summary, markers, now, store=store, ledger=ledger, prices=prices, clock=clock)
    # The fence: a chunk attempt's commit is refused from here on (a ghost cannot change what
    # this run counts); its images go to its pending file, which _record_lost_images commits.
    generation = ledger.start_finalizing(event.batch_id)
    if generation is None:
        logger.warning("batch finalized meanwhile by another run")
        return _stored_report(store, ledger.get_batch(event.batch_id) or summary)
    summary, markers = _account_for_every_image(event, summary, store, ledger, prices)
    failures = _FailureReports.write(event, summary, store, ledger, generation)
    succeeded, failed = summary.images_succeeded, summary.images_failed
    status = (
        BatchStatus.SUCCEEDED
        if failed == 0
        else BatchStatus.FAILED
        if succeeded == 0
        else BatchStatus.PARTIAL
    )
    adds = _own_charge(summary, store, ledger, prices, clock, failed_chunks=len(markers))
    own_usage = Usage(
        **{k.removeprefix("use_"): v for k, v in adds.items() if k.startswith("use_")}
    )
    final_usage = Usage.from_summary(summary) + own_usage
    breakdown = summary_costs(summary.model_copy(update=final_usage.ledger_fields()), prices)
    charged = summary.spent_micro_usd + adds["spent_micro_usd"]
    report = BatchReport(
        batch_id=event.batch_id,
        status=status,
        images_total=summary.images_total,
        images_succeeded=succeeded,
        images_failed=failed,
        cost_micro_usd=summary.cost_micro_usd,
        estimate_micro_usd=summary.estimate_total_micro_usd or 0,
        failures_by_class=failures.by_class,
        costs=breakdown.rounded(),
        charged_micro_usd=charged,
        max_cost_micro_usd=summary.max_cost_micro_usd,
        charge_note=charge_note(
            breakdown.rounded()["total"],
            charged,
            summary.unsettled_micro_usd,
            over_cap_micro_usd=summary.over_cap_micro_usd,
        ),
        cost_per_image=per_image(breakdown, succeeded)["per_image"],
        cost_per_1000=per_image(breakdown, succeeded)["per_1000"],
        failed_key=failures.failed_key,
        redrive_key=failures.redrive_key,
        errors_key=summary.errors_key,
    )
    report_key = store.put_report(event.batch_id, "summary.json", report, generation=generation)
    extra: dict[str, Any] = {"report_key": report_key, "failures_by_class": failures.by_class}
    if failures.redrive_key:
        extra["redrive_key"] = failures.redrive_key
    extra["costs"] = breakdown.rounded()
    extra["hooks_done"] = []  # from here, a run again runs the hooks not recorded as done
    settled = ledger.settle_batch(event.batch_id, status, extra, adds, generation=generation)
    if settled is None:
        # another run settled it (or this one did and its reply was lost), or a later one
        # started (it settles, its reports kept): that run runs the hooks; the roll-up adds
        # only what is missing, and so do the hooks (the settle whose reply was lost ran none)
        logger.warning("batch finalized meanwhile by another run")
        current = ledger.get_batch(event.batch_id)
        if current is not None:
            ledger.roll_up_remainder(event.batch_id, current)
            if current.status not in (None, BatchStatus.RUNNING):
                after_settle(hooks, event.batch_id, current, ledger)
        return report
    ledger.roll_up_remainder(event.batch_id, settled)
    after_settle(hooks, event.batch_id, settled, ledger)
    logger.info("batch finalized", extra=report.model_dump(mode="json"))
    return report


def _stored_report(store: BatchStore, summary: BatchRecord) -> BatchReport:
    if summary.report_key is None:
        raise BatchNotFoundError(f"{summary.batch_id}: settled without a report")
    return BatchReport.model_validate_json(store.open_object(summary.report_key).read())


def _account_for_every_image(
    event: FinalizeEvent,
    summary: BatchRecord,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
) -> tuple[BatchRecord, dict[str, dict[str, Any]]]:
    """Write off unsettled holds and record the images no chunk committed; returns the
    summary (as read by the caller, then again if this changed it) that then counts every
    image, and the failed chunks' markers."""
    markers = ledger.failed_chunks(event.batch_id)
    # A chunk that failed for good may have made images it could not record: they were paid
    # for, so they are recorded (settling that attempt's hold) before anything is written off.
    for chunk_id in markers:
        commit_pending(store, ledger, event.batch_id, chunk_id, prices)
    if summary.images_succeeded + summary.images_failed < summary.images_total:
        # PNGs stored by attempts that died before their commit: recorded (settling their
        # chunk's hold) before holds are written off and the rest recorded as failed.
        capped = summary.max_cost_micro_usd is not None
        keys = [ref.key for ref in store.get_chunk_index(event.batch_id)]
        record_stored_images(event.batch_id, store, ledger, prices, capped=capped, chunk_keys=keys)
    # Holds no commit settled: their attempts died after they may have spent.
    written_off = ledger.write_off_holds(event.batch_id)
    if summary.images_succeeded + summary.images_failed < summary.images_total:
        _record_lost_images(event, store, ledger, markers, prices)
        summary = ledger.get_batch(event.batch_id) or summary
    elif markers or written_off:
        # what they charged is in the summary now, not in the copy read above
        summary = ledger.get_batch(event.batch_id) or summary
    return summary, markers


class _FailureReports(BaseModel):
    by_class: dict[str, int] = {}
    failed_key: str | None = None
    redrive_key: str | None = None

    @classmethod
    def write(
        cls,
        event: FinalizeEvent,
        summary: BatchRecord,
        store: BatchStore,
        ledger: Ledger,
        generation: int,
    ) -> _FailureReports:
        """failed.jsonl (every failed image with its class) and redrive.jsonl (a manifest of
        exactly those images), streamed from the ledger to S3: what stays in memory is the
        failed images' ids by chunk, never their records or the reports."""
        if not summary.images_failed:
            return cls()
        by_class: dict[str, int] = {}
        wanted: dict[str, set[str]] = {}

        def failed_lines(records: Iterator[dict[str, Any]]) -> Iterator[str]:
            for record in records:
                by_class[record["failure_class"]] = by_class.get(record["failure_class"], 0) + 1
                wanted.setdefault(record["chunk_id"], set()).add(record["image_id"])
                yield _failed_line(record)

        failures = (r for r in ledger.image_records(event.batch_id) if r["status"] == "FAILED")
        first = next(failures, None)
        if first is None:
            return cls(by_class=by_class)
        failed_key = store.put_jsonl_report(
            event.batch_id,
            "failed.jsonl",
            failed_lines(itertools.chain([first], failures)),
            generation=generation,
        )
        redrive_key = _write_redrive(event, summary, wanted, store, generation)
        return cls(by_class=by_class, failed_key=failed_key, redrive_key=redrive_key)


def _own_charge(
    summary: BatchRecord,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock | None,
    *,
    failed_chunks: int,
) -> dict[str, int]:
    """The counters finalize ADDs when it settles: its own operations and their charge.

    The batch path's own transitions, each failed chunk's Catch path, and this function. The
    report PUT (and the HEAD its generation check makes) and the settling update happen after
    this count: added here.
    """
    usage = store.meter.take() + ledger.meter.take()
    usage += Usage(
        sfn_transitions=BATCH_TRANSITIONS.batch + BATCH_TRANSITIONS.chunk_failure * failed_chunks,
        s3_put_requests=1,
        s3_get_requests=1,
        # the settling update, at the summary's size as finalize read it
        ddb_write_units=ledger.summary_write_units(summary.batch_id, transactional=False),
    )
    if clock is not None:
        usage += Usage(
            lambda_requests=1, lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb)
        )
    charge = ceil_micro(price_usage(usage, prices).total)
    # finalize spends after the chunks' budget is settled: a capped batch pays it from the
    # overhead reserve ingest held back for it
    move = budget.settle(
        charge,
        held=None,
        capped=summary.capped,
        from_overhead_reserve=True,
    )
    adds = {**usage.ledger_fields(), **move.adds()}
    # checked against the reserve as finalize read it: past it, the charge is over cap (the
    # chunks are settled, so nothing but finalize and the contact sheet spends it now)
    over_cap = budget.over_reserve(charge, summary.overhead_reserve_micro_usd)
    if summary.capped and over_cap:
        adds["over_cap_micro_usd"] = over_cap
    return adds


def _write_redrive(
    event: FinalizeEvent,
    summary: BatchRecord,
    wanted: dict[str, set[str]],
    store: BatchStore,
    generation: int,
) -> str:
    """The failed images as a manifest, chunk by chunk (one chunk file in memory at a time)."""
    settings = json.loads(summary.settings or "{}")

    def lines() -> Iterator[str]:
        yield json.dumps({"batch": settings})
        for chunk_id in sorted(wanted):
            chunk = store.get_chunk(chunk_key(event.batch_id, chunk_id))
            yield from (
                _redrive_line(job) for job in chunk.images if job.image_id in wanted[chunk_id]
            )

    return store.put_jsonl_report(event.batch_id, "redrive.jsonl", lines(), generation=generation)
