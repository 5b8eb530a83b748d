"""Ingest: a manifest in S3 becomes validated chunk files, a batch record and an execution.

The use case only: read -> plan (planning.what_if) -> verdict (planning.verdict) -> upload
the chunk files -> record the batch -> start its execution. What a manifest becomes is
planning's; what ingest writes is here."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import BatchStarter, IngestLedger, IngestStore
from imagebatch.aws.s3_store import chunk_index_key, chunk_key
from imagebatch.backends.concurrency import ConcurrencyPlan, plan_concurrency
from imagebatch.costs.estimate import BatchEstimate
from imagebatch.costs.prices import RegionPrices, load_aws_prices
from imagebatch.costs.usage import (
    LambdaClock,
    Usage,
    billed_mb_ms,
    price_usage,
    summary_write_units,
    tags_bytes,
)
from imagebatch.errors import ManifestError
from imagebatch.manifest.checks import catalog_tag_reason
from imagebatch.manifest.schema import FieldError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.money import MICRO, ceil_micro
from imagebatch.models.records import BatchStatus, ChunkRef, batch_id_for
from imagebatch.planning.plan import CHUNKS_SPOOL, BatchPlan
from imagebatch.planning.pricing import MeasuredThroughput
from imagebatch.planning.stack_options import DeployedOptions
from imagebatch.planning.verdict import assess
from imagebatch.planning.what_if import plan_for_stack

logger = Logger(child=True)

_UPLOAD_THREADS = 8


@dataclass(frozen=True)
class ManifestObject:
    """The uploaded manifest object that a batch comes from: the version its event names
    (None: the bucket is not versioned) and, once ingest has streamed it, its SHA-256."""

    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    content_sha256: str = ""

    @property
    def batch_id(self) -> str:
        if not self.content_sha256:
            raise ValueError("a manifest's batch id is its content's: read it first")
        return batch_id_for(self.bucket, self.key, self.content_sha256)

    def record_fields(self) -> dict[str, str]:
        fields = {
            "manifest_bucket": self.bucket,
            "manifest_key": self.key,
            "manifest_etag": self.etag.strip('"'),
            "manifest_sha256": self.content_sha256,
        }
        if self.version_id:
            fields["manifest_version_id"] = self.version_id
        return fields


@dataclass(frozen=True)
class IngestOutcome:
    batch_id: str
    status: Literal["STARTED", "DUPLICATE", "REJECTED"]
    images: int = 0
    invalid_lines: int = 0
    estimate_inference_micro_usd: int = 0
    message: str = ""

    def output(self) -> dict[str, Any]:
        """The handler's JSON for this outcome; its keys are what callers have always read
        (`estimate_micro_usd` is the inference estimate there)."""
        return {
            "batch_id": self.batch_id,
            "status": self.status,
            "images": self.images,
            "invalid_lines": self.invalid_lines,
            "estimate_micro_usd": self.estimate_inference_micro_usd,
            "message": self.message,
        }


@dataclass(frozen=True)
class IngestPorts:
    """What ingest reads and writes through: ports (aws/ports.py), the adapters injected by
    the handler. The model catalogue is data loaded from the package, not an adapter: it
    travels as the ModelCatalogue the manifest reader checks items against."""

    store: IngestStore
    ledger: IngestLedger
    starter: BatchStarter
    catalogue: ModelCatalogue
    clock: LambdaClock | None = None
    # The endpoint's measured throughput (same table as the ledger); None: reference only.
    throughput: MeasuredThroughput | None = None
    # Whether the endpoint has no instance up now (its recorded scale events); None: assume so.
    endpoint_at_zero: Callable[[], bool] | None = None


def ingest_manifest(
    manifest: ManifestObject, ports: IngestPorts, stack: DeployedOptions
) -> IngestOutcome:
    """A region without prices, or a model it does not offer, is refused with a message."""
    unsupported = (
        load_aws_prices().unsupported_region_reason(stack.region) if stack.region else None
    )
    # The batch is the content of the version the event names: hashed in a first streamed
    # read, so the id (in every chunk file) is known before the plan is written.
    manifest = replace(
        manifest,
        content_sha256=ports.store.manifest_sha256(manifest.key, manifest.version_id),
    )
    batch_id = manifest.batch_id
    existing = ports.ledger.get_batch(batch_id)
    if existing is not None:
        _restart_if_running(manifest, existing, ports.starter, stack)
        return IngestOutcome(batch_id, "DUPLICATE", message="this upload was already ingested")
    if unsupported is not None or stack.prices is None:
        reason = unsupported or f"no prices recorded for region {stack.region!r}"
        error = ManifestError(reason, field="(region)")
        return _reject_unreadable(manifest, error, store=ports.store, ledger=ports.ledger)

    prices = stack.prices
    with tempfile.TemporaryDirectory(prefix="imagebatch-") as spool_dir:
        planned = _plan_and_upload(manifest, Path(spool_dir), ports, stack, prices)
        if isinstance(planned, IngestOutcome):
            return planned
        plan, record = planned

    record = record.model_copy(
        update=_own_usage(ports.store, ports.ledger, ports.clock, prices, tags=record.tags)
    )
    catalogue = ports.catalogue
    concurrency = plan_concurrency(
        [spec.throughput for spec in map(catalogue.get, sorted(plan.models)) if spec is not None]
        or [catalogue.models[0].throughput],
        chunks=len(plan.chunks),
        max_map_concurrency=stack.max_concurrency,
        max_chunk_concurrency=stack.max_chunk_concurrency,
    )
    running = record.model_copy(update={**concurrency.model_dump(), "status": BatchStatus.RUNNING})
    if not ports.ledger.create_batch(batch_id, running):
        # Another delivery wrote the record, or this one did and its reply was lost (botocore
        # sent the write again, which the record's condition refused): then no one else will
        # start the batch. Starting it is a no-op where an execution runs already.
        _restart_if_running(
            manifest, ports.ledger.get_batch(batch_id) or running, ports.starter, stack
        )
        return IngestOutcome(batch_id, "DUPLICATE", message="a concurrent delivery won")
    ports.starter.start(
        batch_id, _execution_input(manifest.bucket, batch_id, concurrency, record.backend)
    )
    logger.info("batch started", extra={"batch_id": batch_id, "images": plan.images_total})
    return IngestOutcome(
        batch_id,
        "STARTED",
        plan.images_total,
        plan.invalid_lines,
        plan.estimate_inference_micro_usd,
        f"{plan.images_total} images in {len(plan.chunks)} chunks",
    )


def _restart_if_running(
    manifest: ManifestObject,
    existing: BatchRecord,
    starter: BatchStarter,
    stack: DeployedOptions,
) -> None:
    """A redelivered upload of a batch still RUNNING starts its execution again: if the first
    StartExecution never happened (a crash after the batch record), this is its only chance;
    if it did, the execution name (the batch id) makes this a no-op."""
    if existing.status != BatchStatus.RUNNING:
        return
    restart = ConcurrencyPlan(
        in_flight=existing.in_flight or stack.max_concurrency * stack.max_chunk_concurrency,
        map_max_concurrency=existing.map_max_concurrency or stack.max_concurrency,
        chunk_concurrency=existing.chunk_concurrency or stack.max_chunk_concurrency,
    )
    batch_id = manifest.batch_id
    starter.start(batch_id, _execution_input(manifest.bucket, batch_id, restart, existing.backend))


def _plan_and_upload(
    manifest: ManifestObject,
    spool: Path,
    ports: IngestPorts,
    stack: DeployedOptions,
    prices: RegionPrices,
) -> tuple[BatchPlan, BatchRecord] | IngestOutcome:
    """One pass over the manifest, then either a rejection (recorded) or the chunk files
    uploaded and the batch record to create."""
    batch_id, store, ledger = manifest.batch_id, ports.store, ports.ledger
    try:
        plan = plan_for_stack(
            store.open_manifest(manifest.key, manifest.version_id),
            manifest.key,
            batch_id=batch_id,
            catalogue=ports.catalogue,
            stack=stack,
            spool=spool,
            at_zero=ports.endpoint_at_zero() if ports.endpoint_at_zero is not None else None,
            throughput=ports.throughput,
            made=ledger,
        )
    except ManifestError as exc:
        return _reject_unreadable(manifest, exc, store=store, ledger=ledger)
    verdict = assess(plan, stack, prices)
    reason = verdict.rejection or _catalog_reason(plan, manifest.key, store)
    errors_key = None
    if plan.errors_path is not None:
        errors_key = f"reports/{batch_id}/errors.jsonl"
        store.upload_file(str(plan.errors_path), errors_key, "application/x-ndjson")
    record = _batch_record(plan, verdict.estimate, manifest, errors_key)
    if reason is not None:
        ledger.create_batch(
            batch_id,
            record.model_copy(update={"status": BatchStatus.REJECTED, "rejection": reason}),
        )
        logger.warning("batch rejected", extra={"batch_id": batch_id, "reason": reason})
        return IngestOutcome(
            batch_id,
            "REJECTED",
            plan.images_total,
            plan.invalid_lines,
            plan.estimate_inference_micro_usd,
            reason,
        )
    _upload_chunks(store, batch_id, plan)
    return plan, record


def _catalog_reason(plan: BatchPlan, key: str, store: IngestStore) -> str | None:
    """A batch tagged as a catalog's night must be one finalize can publish (checks.py)."""
    name = (plan.settings.tags or {}).get("catalog")
    return catalog_tag_reason(key, name, store.object_exists) if name else None


def _own_usage(
    store: IngestStore,
    ledger: IngestLedger,
    clock: LambdaClock | None,
    prices: RegionPrices,
    *,
    tags: Mapping[str, str] | None,
) -> dict[str, int]:
    """Ingest's own operations (its Lambda time and requests, the summary put: its tags
    included, and its gsi1 replica), charged to the batch it creates."""
    usage = store.meter.take() + ledger.meter.take()
    usage += Usage(ddb_write_units=summary_write_units(tags_bytes(tags), transactional=False))
    if clock is not None:
        usage += Usage(
            lambda_requests=1, lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb)
        )
    return {
        **usage.ledger_fields(),
        "spent_micro_usd": ceil_micro(price_usage(usage, prices).total),
    }


def _execution_input(
    bucket: str, batch_id: str, plan: ConcurrencyPlan, backend: str | None
) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "backend": backend or "bedrock",
        "bucket": bucket,
        "chunk_index_key": chunk_index_key(batch_id),
        "max_concurrency": plan.map_max_concurrency,
        "chunk_concurrency": plan.chunk_concurrency,
    }


def _batch_record(
    plan: BatchPlan,
    estimate: BatchEstimate | None,
    manifest: ManifestObject,
    errors_key: str | None,
) -> BatchRecord:
    settings = plan.settings
    fields: dict[str, Any] = {
        **manifest.record_fields(),
        "batch_id": manifest.batch_id,
        "backend": plan.backend,
        "backends": dict(plan.backends) or None,
        "backend_choice": plan.choice,
        "models": sorted(plan.models) or None,
        "output_prefix": settings.output_prefix,
        "on_invalid": settings.on_invalid,
        "tags": settings.tags or None,
        "settings": settings.model_dump_json(),
        "items_valid": plan.items_valid,
        "invalid_lines": plan.invalid_lines,
        "images_total": plan.images_total,
        "chunks_total": len(plan.chunks),
        "estimate_total_micro_usd": (
            estimate.total_micro_usd if estimate else plan.estimate_inference_micro_usd
        ),
        "estimate_inference_micro_usd": plan.estimate_inference_micro_usd,
        "estimate_orchestration_micro_usd": estimate.orchestration_micro_usd if estimate else None,
        "estimate_storage_micro_usd": estimate.storage_micro_usd if estimate else None,
        "estimate_images_reused": plan.reuse.images if plan.reuse else None,
        "estimate_reuse_saved_micro_usd": plan.reuse.saved_micro_usd if plan.reuse else None,
        "overhead_reserve_micro_usd": estimate.overhead_reserve_micro_usd if estimate else None,
        "max_cost_micro_usd": (
            int(settings.max_cost_usd * MICRO) if settings.max_cost_usd is not None else None
        ),
        "errors_key": errors_key,
        # held at admission (aws.ledger.create_batch) when capped: the wake is this batch's
        "endpoint_wake_micro_usd": plan.endpoint_wake_micro_usd or None,
    }
    # None is an attribute the item leaves out (it always was): not set, so not written
    return BatchRecord.model_validate(
        {name: value for name, value in fields.items() if value is not None}
    )


def _upload_chunks(store: IngestStore, batch_id: str, plan: BatchPlan) -> None:
    spool_fd = os.open(plan.spool / CHUNKS_SPOOL, os.O_RDONLY)

    def upload(index: int) -> None:
        key = chunk_key(batch_id, plan.chunks[index].chunk_id)
        store.put_json(key, plan.chunk_body(index, spool_fd))

    try:
        with ThreadPoolExecutor(max_workers=_UPLOAD_THREADS) as pool:
            list(pool.map(upload, range(len(plan.chunks))))
    finally:
        os.close(spool_fd)
    refs = [
        ChunkRef(
            chunk_id=chunk.chunk_id,
            key=chunk_key(batch_id, chunk.chunk_id),
            images=chunk.images,
            backend=chunk.backend,
        )
        for chunk in plan.chunks
    ]
    # The index goes last: the state machine never sees a chunk that is not yet in S3.
    store.put_chunk_index(batch_id, refs)


def _reject_unreadable(
    manifest: ManifestObject, exc: ManifestError, *, store: IngestStore, ledger: IngestLedger
) -> IngestOutcome:
    error = FieldError(
        line=getattr(exc, "line", 0) or 0,
        field=getattr(exc, "field", None) or "(manifest)",
        reason=str(exc),
    )
    batch_id = manifest.batch_id
    errors_key = store.put_jsonl_report(batch_id, "errors.jsonl", [error.model_dump_json()])
    ledger.create_batch(
        batch_id,
        BatchRecord.model_validate(
            {
                **manifest.record_fields(),
                "batch_id": batch_id,
                "status": BatchStatus.REJECTED,
                "rejection": str(exc),
                "errors_key": errors_key,
                "images_total": 0,
            }
        ),
    )
    return IngestOutcome(batch_id, "REJECTED", message=str(exc))
