"""Ingest: a manifest in S3 becomes validated chunk files, a batch record and an execution."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, Protocol

from aws_lambda_powertools import Logger

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, chunk_index_key, chunk_key
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.backends.concurrency import ConcurrencyPlan, plan_concurrency
from imagebatch.backends.sagemaker import estimate_micro_usd as sagemaker_estimate
from imagebatch.backends.sagemaker import expected_seconds
from imagebatch.costs.estimate import (
    BatchEstimate,
    Shape,
    bedrock_options,
    choose_backend,
    estimate_batch,
    sagemaker_options,
)
from imagebatch.costs.prices import InstancePrice, RegionPrices, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath, estimate_sagemaker_batch
from imagebatch.costs.usage import SUMMARY_SIZE_BOUND, LambdaClock, Usage, billed_mb_ms, price_usage
from imagebatch.costs.usage import write_units as _write_units
from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import ManifestReader, format_for_key
from imagebatch.manifest.region_check import check_regions
from imagebatch.manifest.schema import (
    BatchSettings,
    FieldError,
    InvalidLine,
    ManifestItem,
    ValidItem,
)
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.money import MICRO, ceil_micro
from imagebatch.models.records import (
    BatchStatus,
    ChunkFile,
    ChunkRef,
    ImageJob,
    batch_id_for,
    hashed_seed,
)
from imagebatch.models.sagemaker_contract import ShapeBucket, bucket_error, shape_key

logger = Logger(child=True)

SEED_MAX = 4_294_967_294
_UPLOAD_THREADS = 8


class BatchStarter(Protocol):
    def start(self, batch_id: str, execution_input: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class ManifestObject:
    """The uploaded manifest object that a batch comes from."""

    bucket: str
    key: str
    etag: str

    @property
    def batch_id(self) -> str:
        return batch_id_for(self.bucket, self.key, self.etag)

    def record_fields(self) -> dict[str, str]:
        return {
            "manifest_bucket": self.bucket,
            "manifest_key": self.key,
            "manifest_etag": self.etag.strip('"'),
        }


# Every chunk of a plan is appended to this one file in the spool dir: creating a file per
# chunk cost 3.5 of 20 s for a 1,000,000-line manifest (20,000 chunks).
CHUNKS_SPOOL = "chunks.spool"


@dataclass
class BatchPlan:
    """What one streaming pass over a manifest found; chunk files wait in a spool file."""

    settings: BatchSettings
    spool: Path
    chunk_ids: list[str] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    # (offset, length) of each chunk's JSON in spool/CHUNKS_SPOOL, in chunk_ids order
    chunk_spans: list[tuple[int, int]] = field(default_factory=list)
    items_valid: int = 0
    images_total: int = 0
    invalid_lines: int = 0
    errors_path: Path | None = None
    estimate_micro_usd: int = 0  # inference only; `estimate` adds the other categories
    models: set[str] = field(default_factory=set)
    estimate: BatchEstimate | None = None
    backend: str = "bedrock"
    # SageMaker: exact expected inference (rounded up once into estimate_micro_usd), the
    # distinct call shapes per chunk and the pixels made (for the orchestration estimate)
    inference_exact: Decimal = Decimal(0)
    chunk_shapes: list[int] = field(default_factory=list)
    pixels_total: int = 0

    def chunk_body(self, index: int, spool_fd: int | None = None) -> bytes:
        """The JSON of chunk `index` (a ChunkFile), read back from the spool file; pass an
        open descriptor of it to read many without reopening (os.pread is thread-safe)."""
        offset, length = self.chunk_spans[index]
        if spool_fd is not None:
            return os.pread(spool_fd, length, offset)
        with (self.spool / CHUNKS_SPOOL).open("rb") as spooled:
            spooled.seek(offset)
            return spooled.read(length)


@dataclass(frozen=True)
class IngestOutcome:
    batch_id: str
    status: Literal["STARTED", "DUPLICATE", "REJECTED"]
    images: int = 0
    invalid_lines: int = 0
    estimate_micro_usd: int = 0
    message: str = ""


def seed_for(item: ManifestItem, index: int) -> int:
    """A stable seed per image, so a retried or redriven image is the same image."""
    if item.seed is not None:
        return item.seed + index - 1 if item.seed + index - 1 <= SEED_MAX else index
    # Derived seeds are mapped into each model's own range when the request is built
    # (backends.bedrock.model_seed), so the widest range is used here.
    return hashed_seed(item.id, str(index), item.prompt, maximum=SEED_MAX)


def expand_item(item: ManifestItem, line: int, batch_tags: dict[str, str]) -> Iterator[ImageJob]:
    for index in range(1, item.count + 1):
        yield ImageJob(
            image_id=f"{item.id}-{index}",
            item_id=item.id,
            index=index,
            line=line,
            prompt=item.prompt,
            negative_prompt=item.negative_prompt,
            width=item.width,
            height=item.height,
            seed=seed_for(item, index),
            steps=item.steps,
            guidance=item.guidance,
            model=item.model,
            tags={**batch_tags, **item.tags},
        )


def plan_batch(
    stream: BinaryIO,
    key: str,
    *,
    batch_id: str,
    catalogue: ModelCatalogue,
    chunk_size: int,
    spool: Path,
    shape_buckets: tuple[ShapeBucket, ...] = (),
    sagemaker_price: InstancePrice | None = None,
    region: str | None = None,
    sagemaker_seconds: Callable[[ImageJob], Decimal] | None = None,
) -> BatchPlan:
    """Validate and chunk in one streaming pass; memory stays flat at any manifest size.

    `sagemaker_seconds`: the seconds the endpoint is expected to take per image (its own
    measurements where it has them); without it, the data file's reference figure."""
    reader = ManifestReader(stream, format_for_key(key), catalogue)
    plan = BatchPlan(settings=reader.settings, spool=spool)
    price_of = _image_pricer(reader.settings, catalogue, sagemaker_price, sagemaker_seconds)
    pending: list[ImageJob] = []
    errors_file: IO[str] | None = None
    entries = _with_bucket_checks(reader, shape_buckets)
    if region is not None and reader.settings.backend != "sagemaker":
        # Bedrock serves each model in some regions only (data/bedrock_models.json).
        entries = check_regions(entries, catalogue, region)
    chunks_out = (spool / CHUNKS_SPOOL).open("wb")
    try:
        for entry in entries:
            if isinstance(entry, InvalidLine):
                if errors_file is None:
                    plan.errors_path = spool / "errors.jsonl"
                    errors_file = plan.errors_path.open("w", encoding="utf-8")
                plan.invalid_lines += 1
                for error in entry.errors:
                    errors_file.write(error.model_dump_json() + "\n")
                continue
            plan.items_valid += 1
            for job in expand_item(entry.item, entry.line, reader.settings.tags):
                plan.inference_exact += price_of(job)
                plan.pixels_total += job.width * job.height
                plan.models.add(job.model)
                pending.append(job)
                if len(pending) == chunk_size:
                    _spool_chunk(plan, batch_id, pending, chunks_out)
                    pending = []
        if pending:
            _spool_chunk(plan, batch_id, pending, chunks_out)
    finally:
        chunks_out.close()
        if errors_file is not None:
            errors_file.close()
    plan.estimate_micro_usd = ceil_micro(plan.inference_exact)
    return plan


def _image_pricer(
    settings: BatchSettings,
    catalogue: ModelCatalogue,
    sagemaker_price: InstancePrice | None,
    sagemaker_seconds: Callable[[ImageJob], Decimal] | None,
) -> Callable[[ImageJob], Decimal]:
    """Expected micro-dollars per image (exact): the catalogue price on Bedrock; on the
    self-hosted endpoint, its expected seconds x the instance price."""
    if settings.backend == "sagemaker":
        if sagemaker_price is None:
            return lambda job: Decimal(0)
        price = sagemaker_price
        if sagemaker_seconds is None:
            return lambda job: Decimal(
                sagemaker_estimate(job.width, job.height, job.steps, price, model=job.model)
            )
        seconds = sagemaker_seconds
        return lambda job: seconds(job) * price.micro_usd_per_second
    price_by_shape: dict[tuple[str, int, int], int] = {}

    def bedrock(job: ImageJob) -> Decimal:
        shape = (job.model, job.width, job.height)
        if shape not in price_by_shape:
            spec = catalogue.get(job.model)
            price_by_shape[shape] = (
                spec.price_for(job.width, job.height).micro_usd_per_image if spec else 0
            )
        return Decimal(price_by_shape[shape])

    return bedrock


class EndpointSeconds:
    """Expected seconds per image on the deployed endpoint: its own measured mean for a shape
    it has served (read once per shape), else the data file's reference figure."""

    def __init__(
        self, throughput: EndpointThroughput, endpoint: str, instance_type: str, model: str
    ) -> None:
        self._throughput = throughput
        self._endpoint = endpoint
        self._instance_type = instance_type
        self._model = model
        self._seconds: dict[tuple[str, str], Decimal] = {}

    def __call__(self, job: ImageJob) -> Decimal:
        model = self._model or job.model
        key = shape_key(job)
        if (model, key) not in self._seconds:
            expected = expected_seconds(
                [key],
                instance_type=self._instance_type,
                model=model,
                measured=self._throughput.measured(self._endpoint, model, [key]),
            )
            self._seconds[(model, key)] = expected.per_image[key]
        return self._seconds[(model, key)]


def _with_bucket_checks(
    reader: ManifestReader, buckets: tuple[ShapeBucket, ...]
) -> Iterator[ValidItem | InvalidLine]:
    if reader.settings.backend != "sagemaker":
        yield from reader
        return
    for entry in reader:
        yield _check_shape_bucket(entry, buckets)


def _check_shape_bucket(
    entry: ValidItem | InvalidLine, buckets: tuple[ShapeBucket, ...]
) -> ValidItem | InvalidLine:
    """A size the endpoint was not compiled for is a line error, named with the buckets."""
    if isinstance(entry, InvalidLine):
        return entry
    reason = bucket_error(entry.item.width, entry.item.height, buckets)
    if reason is None:
        return entry
    error = FieldError(line=entry.line, field="width", reason=reason, item_id=entry.item.id)
    return InvalidLine(line=entry.line, errors=[error])


def _spool_chunk(plan: BatchPlan, batch_id: str, jobs: list[ImageJob], out: BinaryIO) -> None:
    chunk_id = f"{len(plan.chunk_ids):05d}"
    chunk = ChunkFile(
        batch_id=batch_id,
        chunk_id=chunk_id,
        backend="sagemaker" if plan.settings.backend == "sagemaker" else "bedrock",
        output_prefix=plan.settings.output_prefix,
        images=jobs,
        tags=plan.settings.tags,
    )
    body = chunk.model_dump_json(exclude_defaults=True).encode()
    plan.chunk_spans.append((out.tell(), len(body)))
    out.write(body)
    plan.chunk_shapes.append(len({shape_key(job) for job in jobs}))
    plan.chunk_ids.append(chunk_id)
    plan.chunk_sizes.append(len(jobs))
    plan.images_total += len(jobs)


def rejection_reason(
    plan: BatchPlan, *, sagemaker_deployed: bool = False, sagemaker_priced: bool = True
) -> str | None:
    settings = plan.settings
    if plan.invalid_lines and settings.on_invalid == "reject":
        return (
            f"{plan.invalid_lines} invalid line(s) and on_invalid is 'reject': nothing runs; "
            "see errors.jsonl, fix the lines or set on_invalid to 'skip'"
        )
    if plan.images_total == 0:
        return "no valid items: nothing to generate"
    if settings.backend == "sagemaker" and not sagemaker_deployed:
        return "backend 'sagemaker' is not deployed in this stack yet; use 'bedrock' or 'auto'"
    if settings.backend == "sagemaker" and not sagemaker_priced:
        return (
            "backend 'sagemaker': src/imagebatch/data/aws_prices.json has no price for the "
            "endpoint's instance type in this region, so its images cannot be charged; "
            "use 'bedrock'"
        )
    if settings.max_cost_usd is not None:
        cap = int(settings.max_cost_usd * MICRO)
        estimate = plan.estimate
        total = estimate.total_micro_usd if estimate else plan.estimate_micro_usd
        reserve = estimate.overhead_reserve_micro_usd if estimate else 0
        if total + reserve > cap:
            detail = (
                f" (inference ${estimate.inference_micro_usd / 1e6:.6f}, orchestration "
                f"${estimate.orchestration_micro_usd / 1e6:.6f}, storage "
                f"${estimate.storage_micro_usd / 1e6:.6f}; plus ${reserve / 1e6:.6f} held "
                "back so chunks refused for budget can still be recorded)"
                if estimate
                else ""
            )
            return (
                f"estimated cost ${total / 1e6:.6f} for {plan.images_total} images{detail} "
                f"exceeds max_cost_usd ${settings.max_cost_usd}: nothing was spent; raise "
                "max_cost_usd or split the manifest"
            )
    return None


def choose_batch_backend(
    plan: BatchPlan,
    catalogue: ModelCatalogue,
    prices: RegionPrices,
    shape: Shape,
    sagemaker_instance_types: tuple[str, ...] = (),
) -> str:
    """`backend: auto`: the cheapest deployed backend for this batch (no deadline at ingest)."""
    if plan.settings.backend != "auto":
        return plan.settings.backend
    options = bedrock_options(sorted(plan.models), catalogue, prices, shape)
    options += sagemaker_options(sagemaker_instance_types, prices, shape)
    chosen = choose_backend(options, plan.images_total)
    return chosen.backend if chosen else "bedrock"


def assess_plan(
    plan: BatchPlan, catalogue: ModelCatalogue, stack: StackOptions, prices: RegionPrices
) -> str | None:
    """What ingest decides before it writes anything: the estimate by category, the backend
    (`auto` resolved), and the rejection reason (None: the batch runs). `imagebatch validate`
    calls this too, so its verdict is ingest's."""
    plan.estimate = _estimate(plan, stack, prices)
    plan.backend = choose_batch_backend(
        plan, catalogue, prices, stack.shape, stack.sagemaker_instance_types
    )
    return rejection_reason(
        plan,
        sagemaker_deployed=stack.sagemaker_buckets is not None,
        sagemaker_priced=stack.sagemaker_buckets is None or stack.sagemaker_price is not None,
    )


@dataclass(frozen=True)
class IngestPorts:
    """What ingest reads and writes through: the adapters, injected by the handler."""

    store: BatchStore
    ledger: Ledger
    starter: BatchStarter
    catalogue: ModelCatalogue
    clock: LambdaClock | None = None
    # The endpoint's measured throughput (same table as the ledger); None: reference only.
    throughput: EndpointThroughput | None = None


@dataclass(frozen=True)
class StackOptions:
    """What the stack deployed, from its settings: chunking, concurrency ceilings, prices, and
    the SageMaker endpoint (`sagemaker_buckets` None: no endpoint; empty: any size)."""

    chunk_size: int
    max_concurrency: int
    # None where imagebatch has no prices for the stack's region: every batch is refused.
    prices: RegionPrices | None
    shape: Shape
    max_chunk_concurrency: int = 50
    sagemaker_buckets: tuple[ShapeBucket, ...] | None = None
    sagemaker_price: InstancePrice | None = None
    sagemaker_instance_types: tuple[str, ...] = ()
    # The stack's region: Bedrock serves each model in some regions only.
    region: str | None = None
    sagemaker_endpoint: str = ""
    # The model the endpoint serves (empty: the images' own ids) and its functions' shape.
    sagemaker_model: str = ""
    sagemaker_path: SageMakerPath = field(default_factory=SageMakerPath)


def ingest_manifest(
    manifest: ManifestObject, ports: IngestPorts, stack: StackOptions
) -> IngestOutcome:
    """A region without prices, or a model it does not offer, is refused with a message."""
    unsupported = (
        load_aws_prices().unsupported_region_reason(stack.region) if stack.region else None
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

    record.update(_own_usage(ports.store, ports.ledger, ports.clock, prices))
    catalogue = ports.catalogue
    concurrency = plan_concurrency(
        [spec.throughput for spec in map(catalogue.get, sorted(plan.models)) if spec is not None]
        or [catalogue.models[0].throughput],
        chunks=len(plan.chunk_ids),
        max_map_concurrency=stack.max_concurrency,
        max_chunk_concurrency=stack.max_chunk_concurrency,
    )
    running = {**record, **concurrency.model_dump(), "status": BatchStatus.RUNNING.value}
    if not ports.ledger.create_batch(batch_id, running):
        return IngestOutcome(batch_id, "DUPLICATE", message="a concurrent delivery won")
    ports.starter.start(
        batch_id, _execution_input(manifest.bucket, batch_id, concurrency, record["backend"])
    )
    logger.info("batch started", extra={"batch_id": batch_id, "images": plan.images_total})
    return IngestOutcome(
        batch_id,
        "STARTED",
        plan.images_total,
        plan.invalid_lines,
        plan.estimate_micro_usd,
        f"{plan.images_total} images in {len(plan.chunk_ids)} chunks",
    )


def _restart_if_running(
    manifest: ManifestObject, existing: dict[str, Any], starter: BatchStarter, stack: StackOptions
) -> None:
    """A redelivered upload of a batch still RUNNING starts its execution again: if the first
    StartExecution never happened (a crash after the batch record), this is its only chance;
    if it did, the execution name (the batch id) makes this a no-op."""
    if existing["status"] != BatchStatus.RUNNING:
        return
    restart = ConcurrencyPlan(
        in_flight=existing.get("in_flight") or stack.max_concurrency * stack.max_chunk_concurrency,
        map_max_concurrency=existing.get("map_max_concurrency") or stack.max_concurrency,
        chunk_concurrency=existing.get("chunk_concurrency") or stack.max_chunk_concurrency,
    )
    batch_id = manifest.batch_id
    starter.start(
        batch_id, _execution_input(manifest.bucket, batch_id, restart, existing.get("backend"))
    )


def _plan_and_upload(
    manifest: ManifestObject,
    spool: Path,
    ports: IngestPorts,
    stack: StackOptions,
    prices: RegionPrices,
) -> tuple[BatchPlan, dict[str, Any]] | IngestOutcome:
    """One pass over the manifest, then either a rejection (recorded) or the chunk files
    uploaded and the batch record to create."""
    batch_id, store, ledger = manifest.batch_id, ports.store, ports.ledger
    try:
        plan = plan_batch(
            store.open_manifest(manifest.key),
            manifest.key,
            batch_id=batch_id,
            catalogue=ports.catalogue,
            chunk_size=stack.chunk_size,
            spool=spool,
            shape_buckets=stack.sagemaker_buckets or (),
            sagemaker_price=stack.sagemaker_price,
            region=stack.region,
            sagemaker_seconds=(
                EndpointSeconds(
                    ports.throughput,
                    stack.sagemaker_endpoint,
                    stack.sagemaker_price.instance_type,
                    stack.sagemaker_model,
                )
                if ports.throughput is not None and stack.sagemaker_price is not None
                else None
            ),
        )
    except ManifestError as exc:
        return _reject_unreadable(manifest, exc, store=store, ledger=ledger)
    reason = assess_plan(plan, ports.catalogue, stack, prices)
    errors_key = None
    if plan.errors_path is not None:
        errors_key = f"reports/{batch_id}/errors.jsonl"
        store.upload_file(str(plan.errors_path), errors_key, "application/x-ndjson")
    record = _batch_record(plan, manifest, errors_key)
    if reason is not None:
        ledger.create_batch(
            batch_id, {**record, "status": BatchStatus.REJECTED.value, "rejection": reason}
        )
        logger.warning("batch rejected", extra={"batch_id": batch_id, "reason": reason})
        return IngestOutcome(
            batch_id,
            "REJECTED",
            plan.images_total,
            plan.invalid_lines,
            plan.estimate_micro_usd,
            reason,
        )
    _upload_chunks(store, batch_id, plan)
    return plan, record


def _estimate(plan: BatchPlan, stack: StackOptions, prices: RegionPrices) -> BatchEstimate:
    if plan.settings.backend == "sagemaker":
        return estimate_sagemaker_batch(
            plan.inference_exact,
            plan.chunk_sizes,
            plan.chunk_shapes,
            prices,
            stack.shape,
            path=stack.sagemaker_path,
            capped=plan.settings.max_cost_usd is not None,
            pixels=plan.pixels_total // max(1, plan.images_total),
        )
    return estimate_batch(plan.estimate_micro_usd, plan.chunk_sizes, prices, stack.shape)


def _own_usage(
    store: BatchStore, ledger: Ledger, clock: LambdaClock | None, prices: RegionPrices
) -> dict[str, int]:
    """Ingest's own operations (its Lambda time and requests, the summary put), charged to
    the batch it creates."""
    usage = store.meter.take() + ledger.meter.take()
    usage += Usage(ddb_write_units=_write_units(SUMMARY_SIZE_BOUND))
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
    plan: BatchPlan, manifest: ManifestObject, errors_key: str | None
) -> dict[str, Any]:
    settings = plan.settings
    return {
        **manifest.record_fields(),
        "backend": plan.backend,
        "models": sorted(plan.models) or None,
        "output_prefix": settings.output_prefix,
        "on_invalid": settings.on_invalid,
        "tags": settings.tags or None,
        "settings": settings.model_dump_json(),
        "items_valid": plan.items_valid,
        "invalid_lines": plan.invalid_lines,
        "images_total": plan.images_total,
        "chunks_total": len(plan.chunk_ids),
        "estimate_micro_usd": (
            plan.estimate.total_micro_usd if plan.estimate else plan.estimate_micro_usd
        ),
        "estimate_inference_micro_usd": plan.estimate_micro_usd,
        "estimate_orchestration_micro_usd": (
            plan.estimate.orchestration_micro_usd if plan.estimate else None
        ),
        "estimate_storage_micro_usd": plan.estimate.storage_micro_usd if plan.estimate else None,
        "overhead_reserve_micro_usd": (
            plan.estimate.overhead_reserve_micro_usd if plan.estimate else None
        ),
        "max_cost_micro_usd": (
            int(settings.max_cost_usd * MICRO) if settings.max_cost_usd is not None else None
        ),
        "errors_key": errors_key,
    }


def _upload_chunks(store: BatchStore, batch_id: str, plan: BatchPlan) -> None:
    spool_fd = os.open(plan.spool / CHUNKS_SPOOL, os.O_RDONLY)

    def upload(index: int) -> None:
        key = chunk_key(batch_id, plan.chunk_ids[index])
        store.put_json(key, plan.chunk_body(index, spool_fd))

    try:
        with ThreadPoolExecutor(max_workers=_UPLOAD_THREADS) as pool:
            list(pool.map(upload, range(len(plan.chunk_ids))))
    finally:
        os.close(spool_fd)
    refs = [
        ChunkRef(chunk_id=chunk_id, key=chunk_key(batch_id, chunk_id), images=size)
        for chunk_id, size in zip(plan.chunk_ids, plan.chunk_sizes, strict=True)
    ]
    # The index goes last: the state machine never sees a chunk that is not yet in S3.
    store.put_chunk_index(batch_id, refs)


def _reject_unreadable(
    manifest: ManifestObject, exc: ManifestError, *, store: BatchStore, ledger: Ledger
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
        {
            **manifest.record_fields(),
            "status": BatchStatus.REJECTED.value,
            "rejection": str(exc),
            "errors_key": errors_key,
            "images_total": 0,
        },
    )
    return IngestOutcome(batch_id, "REJECTED", message=str(exc))
