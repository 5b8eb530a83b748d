"""Finalize: account for every image, set the batch status, write the report."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.catalog_state import CatalogState
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, chunk_key
from imagebatch.catalog.nightly import publish_catalog_batch
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.usage import (
    BATCH_TRANSITIONS,
    SUMMARY_SIZE_BOUND,
    LambdaClock,
    Usage,
    billed_mb_ms,
    per_image,
    price_usage,
    summary_costs,
    write_units,
)
from imagebatch.errors import BatchNotFoundError
from imagebatch.models.money import ceil_micro
from imagebatch.models.records import BatchStatus, ChunkFile, FailureClass, ImageJob, ImageOutcome

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
        try:
            message = json.loads(json.loads(cause)["errorMessage"])
            return FailureClass(message["unfinished"][image_id]), f"{error} after retries"
        except (ValueError, KeyError, TypeError):
            return FailureClass.THROTTLED, f"{error} after retries"
    if "Timeout" in error or "Timedout" in error:
        return FailureClass.TIMEOUT, error
    return FailureClass.MODEL_ERROR, f"{error}: {cause[:500]}"


def _record_lost_images(
    event: FinalizeEvent, store: BatchStore, ledger: Ledger, markers: dict[str, dict[str, Any]]
) -> None:
    """Images no chunk committed (a chunk that failed for good) are recorded as failed."""
    recorded = {r["sk"].removeprefix("IMAGE#") for r in ledger.image_records(event.batch_id)}
    for ref in store.get_chunk_index(event.batch_id):
        chunk = store.get_chunk(ref.key)
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


def finalize_batch(
    event: FinalizeEvent,
    *,
    store: BatchStore,
    ledger: Ledger,
    prices: RegionPrices,
    clock: LambdaClock | None = None,
    catalog_state: CatalogState | None = None,
) -> BatchReport:
    summary = ledger.get_batch(event.batch_id)
    if summary is None:
        raise BatchNotFoundError(event.batch_id)
    # Holds no commit settled: their attempts died after they may have spent.
    ledger.write_off_holds(event.batch_id)
    markers = ledger.failed_chunks(event.batch_id)
    if summary["images_succeeded"] + summary["images_failed"] < summary["images_total"]:
        _record_lost_images(event, store, ledger, markers)
        summary = ledger.get_batch(event.batch_id) or summary

    failures = (
        [r for r in ledger.image_records(event.batch_id) if r["status"] == "FAILED"]
        if summary["images_failed"]
        else []
    )
    by_class: dict[str, int] = {}
    for record in failures:
        by_class[record["failure_class"]] = by_class.get(record["failure_class"], 0) + 1

    failed_key = redrive_key = None
    if failures:
        failed_key = store.put_jsonl_report(
            event.batch_id,
            "failed.jsonl",
            (
                json.dumps(
                    {
                        k: r.get(k)
                        for k in (
                            "image_id",
                            "item_id",
                            "chunk_id",
                            "failure_class",
                            "failure_reason",
                            "model",
                            "seed",
                        )
                    }
                )
                for r in failures
            ),
        )
        redrive_key = _write_redrive(event, summary, failures, store)

    succeeded, failed = summary["images_succeeded"], summary["images_failed"]
    status = (
        BatchStatus.SUCCEEDED
        if failed == 0
        else BatchStatus.FAILED
        if succeeded == 0
        else BatchStatus.PARTIAL
    )
    # The batch path's own transitions, each failed chunk's Catch path, and this function.
    # The report PUT and the settling update below happen after this count: added here.
    usage = store.meter.take() + ledger.meter.take()
    usage += Usage(
        sfn_transitions=BATCH_TRANSITIONS.batch + BATCH_TRANSITIONS.chunk_failure * len(markers),
        s3_put_requests=1,
        ddb_write_units=write_units(SUMMARY_SIZE_BOUND),
    )
    if clock is not None:
        usage += Usage(
            lambda_requests=1, lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb)
        )
    charge = ceil_micro(price_usage(usage, prices).total)
    adds = {**usage.ledger_fields(), "spent_micro_usd": charge}
    if summary.get("max_cost_micro_usd") is not None:
        adds["overhead_reserve_micro_usd"] = -charge
    final_usage = {k: int(summary.get(k, 0)) + v for k, v in adds.items() if k.startswith("use_")}
    breakdown = summary_costs({**summary, **final_usage}, prices)
    report = BatchReport(
        batch_id=event.batch_id,
        status=status,
        images_total=summary["images_total"],
        images_succeeded=succeeded,
        images_failed=failed,
        cost_micro_usd=summary["cost_micro_usd"],
        estimate_micro_usd=summary.get("estimate_micro_usd", 0),
        failures_by_class=by_class,
        costs=breakdown.rounded(),
        cost_per_image=per_image(breakdown, succeeded)["per_image"],
        cost_per_1000=per_image(breakdown, succeeded)["per_1000"],
        failed_key=failed_key,
        redrive_key=redrive_key,
        errors_key=summary.get("errors_key"),
    )
    report_key = store.put_report(event.batch_id, "summary.json", report)
    extra: dict[str, Any] = {"report_key": report_key, "failures_by_class": by_class}
    if redrive_key:
        extra["redrive_key"] = redrive_key
    extra["costs"] = breakdown.rounded()
    settled = ledger.settle_batch(event.batch_id, status, extra, adds)
    ledger.roll_up_remainder(event.batch_id, settled)
    if catalog_state is not None:
        published = publish_catalog_batch(
            event.batch_id, summary, store=store, ledger=ledger, state=catalog_state
        )
        if published:
            logger.info("catalog variants published", extra={"published": published})
    logger.info("batch finalized", extra=report.model_dump(mode="json"))
    return report


def _write_redrive(
    event: FinalizeEvent,
    summary: dict[str, Any],
    failures: list[dict[str, Any]],
    store: BatchStore,
) -> str:
    wanted: dict[str, set[str]] = {}
    for record in failures:
        wanted.setdefault(record["chunk_id"], set()).add(record["image_id"])
    settings = json.loads(summary.get("settings") or "{}")
    lines = [json.dumps({"batch": settings})]
    for chunk_id in sorted(wanted):
        chunk = store.get_chunk(chunk_key(event.batch_id, chunk_id))
        lines.extend(_redrive_line(job) for job in chunk.images if job.image_id in wanted[chunk_id])
    return store.put_jsonl_report(event.batch_id, "redrive.jsonl", lines)
