"""Ingest: a manifest in S3 becomes validated chunk files, a batch record and an execution."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, Protocol

from aws_lambda_powertools import Logger

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, chunk_index_key, chunk_key
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.backends.concurrency import ConcurrencyPlan, plan_concurrency
from imagebatch.backends.routing import (
    Backend,
    Deployment,
    FlexibleImages,
    Route,
    choose_for_flexible,
    job_for_backend,
    route_item,
    wake_micro_usd,
)
from imagebatch.backends.routing import EndpointSeconds as EndpointSecondsFn
from imagebatch.backends.sagemaker import expected_seconds
from imagebatch.costs.estimate import BatchEstimate, Shape, estimate_batch
from imagebatch.costs.prices import RegionPrices, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath, estimate_mixed_batch
from imagebatch.costs.usage import SUMMARY_SIZE_BOUND, LambdaClock, Usage, billed_mb_ms, price_usage
from imagebatch.costs.usage import write_units as _write_units
from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import ManifestReader, format_for_key
from imagebatch.manifest.region_check import check_region
from imagebatch.manifest.schema import (
    BatchSettings,
    FieldError,
    InvalidLine,
    ManifestItem,
    ValidItem,
)
from imagebatch.models.batch_record import BatchRecord
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
from imagebatch.models.sagemaker_contract import parse_buckets, shape_key
from imagebatch.settings import IngestSettings

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
    # per chunk: the backend that makes it, and its distinct call shapes
    chunk_backends: list[str] = field(default_factory=list)
    chunk_shapes: list[int] = field(default_factory=list)
    items_valid: int = 0
    images_total: int = 0
    invalid_lines: int = 0
    errors_path: Path | None = None
    # inference only; `estimate` adds the other categories
    estimate_inference_micro_usd: int = 0
    models: set[str] = field(default_factory=set)
    estimate: BatchEstimate | None = None
    # images per backend, and why images either backend could make went where they did
    backends: dict[str, int] = field(default_factory=dict)
    choice: str | None = None
    # exact expected inference (rounded up once into estimate_inference_micro_usd), pixels made
    inference_exact: Decimal = Decimal(0)
    inference_by_backend: dict[str, Decimal] = field(default_factory=dict)
    # The endpoint's cold start and idle tail this batch would cause (it is at zero), if any.
    endpoint_wake_micro_usd: int = 0
    pixels_total: int = 0

    @property
    def backend(self) -> str:
        """The batch's backend: the one every image runs on, or `mixed`."""
        used = [name for name, images in self.backends.items() if images]
        if len(used) == 1:
            return used[0]
        if used:
            return "mixed"
        return "sagemaker" if self.settings.backend == "sagemaker" else "bedrock"

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
    deployment: Deployment | None = None,
    endpoint_seconds: EndpointSecondsFn | None = None,
    prices: RegionPrices | None = None,
    shape: Shape | None = None,
    region: str | None = None,
) -> BatchPlan:
    """Validate, route and chunk; memory stays flat at any manifest size.

    One pass over the manifest checks each line and routes it (backends/routing.py): an image
    only one backend can make goes straight into that backend's chunks; an image either
    could make is priced both ways and set aside in a spool file. Then the backend for those
    is chosen and they are chunked. `endpoint_seconds`: what the endpoint is expected to take
    per image (its own measurements where it has them); without it, the data file's reference
    figure. `region`: Bedrock serves each model in some regions only (data/bedrock_models.json).
    """
    reader = ManifestReader(
        stream,
        format_for_key(key),
        catalogue,
        endpoint_model=deployment.model_id if deployment else None,
    )
    plan = BatchPlan(settings=reader.settings, spool=spool)
    pricer = _Pricer(catalogue, deployment, endpoint_seconds)
    flexible_path = spool / "flexible.jsonl"
    flexible = FlexibleImages()
    endpoint_needed = False
    today = datetime.now(UTC).date()
    with (
        _ErrorsFile(plan) as errors,
        _Chunker(plan, batch_id, chunk_size, pricer, deployment) as chunker,
    ):
        with flexible_path.open("w", encoding="utf-8") as set_aside:
            for entry in reader:
                if isinstance(entry, InvalidLine):
                    errors.write(entry)
                    continue
                route = _route(entry, plan.settings, catalogue, deployment, today, region)
                if isinstance(route, InvalidLine):
                    errors.write(route)
                    continue
                plan.items_valid += 1
                endpoint_needed = endpoint_needed or route == "sagemaker"
                for job in expand_item(entry.item, entry.line, reader.settings.tags):
                    if route == "either":
                        flexible.add(pricer.bedrock(job), pricer.endpoint_seconds(job))
                        set_aside.write(job.model_dump_json() + "\n")
                    else:
                        chunker.add(job, route)
        flexible_backend: Backend = "bedrock"
        if flexible.images and deployment is not None:
            choice = choose_for_flexible(
                flexible,
                deployment=deployment,
                endpoint_needed=endpoint_needed,
                prices=prices or load_aws_prices().region("us-east-1"),
                shape=shape or Shape(chunk_size=chunk_size),
                deadline_s=(
                    float(plan.settings.deadline_minutes * 60)
                    if plan.settings.deadline_minutes is not None
                    else None
                ),
            )
            flexible_backend, plan.choice = choice.backend, choice.reason
        with flexible_path.open(encoding="utf-8") as set_aside:
            for text in set_aside:
                chunker.add(ImageJob.model_validate_json(text), flexible_backend)
    flexible_path.unlink()
    plan.estimate_inference_micro_usd = ceil_micro(plan.inference_exact)
    if deployment is not None and plan.backends.get("sagemaker"):
        # charged to the batches that caused it as endpoint overhead, not in the estimate
        plan.endpoint_wake_micro_usd = ceil_micro(wake_micro_usd(deployment))
    return plan


def _route(  # noqa: PLR0917 - private, one caller
    entry: ValidItem,
    settings: BatchSettings,
    catalogue: ModelCatalogue,
    deployment: Deployment | None,
    today: date,
    region: str | None,
) -> Route | InvalidLine:
    routed: Route
    if deployment is None:
        if settings.backend == "sagemaker":
            return "sagemaker"  # refused as a whole: the backend is not deployed
        routed = "bedrock"  # the reader checked the item against its Bedrock model
    else:
        found = route_item(
            entry.item,
            entry.line,
            settings.backend,
            catalogue=catalogue,
            deployment=deployment,
            today=today,
        )
        if isinstance(found, list):
            return InvalidLine(line=entry.line, errors=found)
        routed = found
    if routed == "bedrock" and region is not None:
        # Bedrock serves each model in some regions only (data/bedrock_models.json)
        checked = check_region(entry, catalogue, region)
        if isinstance(checked, InvalidLine):
            return checked
    return routed


class _ErrorsFile:
    """errors.jsonl in the spool, opened on the first invalid line."""

    def __init__(self, plan: BatchPlan) -> None:
        self._plan = plan
        self._file: IO[str] | None = None

    def __enter__(self) -> _ErrorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, line: InvalidLine) -> None:
        if self._file is None:
            self._plan.errors_path = self._plan.spool / "errors.jsonl"
            self._file = self._plan.errors_path.open("w", encoding="utf-8")
        self._plan.invalid_lines += 1
        for error in line.errors:
            self._file.write(error.model_dump_json() + "\n")


class _Pricer:
    """Expected micro-dollars per image (exact): the catalogue price on Bedrock; on the
    endpoint, its expected seconds x the instance price."""

    def __init__(
        self,
        catalogue: ModelCatalogue,
        deployment: Deployment | None,
        endpoint_seconds: EndpointSecondsFn | None,
    ) -> None:
        self._catalogue = catalogue
        self._deployment = deployment
        self._endpoint_seconds = endpoint_seconds
        self._bedrock: dict[tuple[str, int, int], int] = {}

    def bedrock(self, job: ImageJob) -> Decimal:
        shape = (job.model, job.width, job.height)
        if shape not in self._bedrock:
            spec = self._catalogue.get(job.model)
            self._bedrock[shape] = (
                spec.price_for(job.width, job.height).micro_usd_per_image if spec else 0
            )
        return Decimal(self._bedrock[shape])

    def endpoint_seconds(self, job: ImageJob) -> Decimal:
        deployment = self._deployment
        if deployment is None:
            return Decimal(0)
        job = job_for_backend(job, "sagemaker", deployment)
        if self._endpoint_seconds is not None:
            return self._endpoint_seconds(job)
        return expected_seconds(
            [shape_key(job)], instance_type=deployment.instance_type, model=job.model, measured={}
        ).for_job(job)

    def price(self, job: ImageJob, backend: Backend) -> Decimal:
        if backend == "bedrock":
            return self.bedrock(job)
        if self._deployment is None:
            return Decimal(0)
        return self.endpoint_seconds(job) * self._deployment.price.micro_usd_per_second


class _Chunker:
    """Images into single-backend chunks of chunk_size, appended to the plan's spool file."""

    def __init__(
        self,
        plan: BatchPlan,
        batch_id: str,
        chunk_size: int,
        pricer: _Pricer,
        deployment: Deployment | None,
    ) -> None:
        self._plan = plan
        self._batch_id = batch_id
        self._chunk_size = chunk_size
        self._pricer = pricer
        self._deployment = deployment
        self._pending: dict[Backend, list[ImageJob]] = {"bedrock": [], "sagemaker": []}
        self._out = (plan.spool / CHUNKS_SPOOL).open("wb")

    def __enter__(self) -> _Chunker:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                for backend, jobs in self._pending.items():
                    if jobs:
                        self._spool(jobs, backend)
        finally:
            self._out.close()

    def add(self, job: ImageJob, backend: Backend) -> None:
        plan = self._plan
        job = job_for_backend(job, backend, self._deployment)
        price = self._pricer.price(job, backend)
        plan.inference_exact += price
        plan.inference_by_backend[backend] = plan.inference_by_backend.get(backend, 0) + price
        plan.pixels_total += job.width * job.height
        plan.models.add(job.model)
        plan.backends[backend] = plan.backends.get(backend, 0) + 1
        pending = self._pending[backend]
        pending.append(job)
        if len(pending) == self._chunk_size:
            self._spool(pending, backend)
            self._pending[backend] = []

    def _spool(self, jobs: list[ImageJob], backend: Backend) -> None:
        plan = self._plan
        chunk_id = f"{len(plan.chunk_ids):05d}"
        chunk = ChunkFile(
            batch_id=self._batch_id,
            chunk_id=chunk_id,
            backend=backend,
            output_prefix=plan.settings.output_prefix,
            images=jobs,
            tags=plan.settings.tags,
        )
        body = chunk.model_dump_json(exclude_defaults=True).encode()
        plan.chunk_spans.append((self._out.tell(), len(body)))
        self._out.write(body)
        plan.chunk_shapes.append(len({shape_key(job) for job in jobs}))
        plan.chunk_backends.append(backend)
        plan.chunk_ids.append(chunk_id)
        plan.chunk_sizes.append(len(jobs))
        plan.images_total += len(jobs)


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
        total = estimate.total_micro_usd if estimate else plan.estimate_inference_micro_usd
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


def assess_plan(plan: BatchPlan, stack: StackOptions, prices: RegionPrices) -> str | None:
    """What ingest decides before it writes anything: the estimate by category and the
    rejection reason (None: the batch runs). `imagebatch validate` and `estimate` call this
    too (through plan_for_stack), so their verdict is ingest's."""
    plan.estimate = _estimate(plan, stack, prices)
    return rejection_reason(
        plan,
        sagemaker_deployed=stack.deployment is not None or stack.sagemaker_unpriced,
        sagemaker_priced=not stack.sagemaker_unpriced,
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
    # Whether the endpoint has no instance up now (its recorded scale events); None: assume so.
    endpoint_at_zero: Callable[[], bool] | None = None


@dataclass(frozen=True)
class StackOptions:
    """What the stack deployed, from its settings: chunking, concurrency ceilings, prices, and
    the SageMaker endpoint (None: not deployed)."""

    chunk_size: int
    max_concurrency: int
    # None where imagebatch has no prices for the stack's region: every batch is refused.
    prices: RegionPrices | None
    shape: Shape
    max_chunk_concurrency: int = 50
    # The stack's region: Bedrock serves each model in some regions only.
    region: str | None = None
    deployment: Deployment | None = None
    # An endpoint is deployed but its instance type has no price in this region: its
    # batches are refused (their images could not be charged).
    sagemaker_unpriced: bool = False

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> StackOptions:
        """The ingest function's settings (the template's parameters, through its
        environment) as options; `imagebatch estimate` builds the same from the template."""
        prices = load_aws_prices().find(settings.aws_region)
        deployment = None
        instance = (
            prices.find_instance(settings.sagemaker_instance_type)
            if prices is not None and settings.sagemaker_endpoint_name
            else None
        )
        if instance is not None:
            deployment = Deployment(
                endpoint_name=settings.sagemaker_endpoint_name,
                price=instance,
                model_id=settings.sagemaker_model_id,
                buckets=parse_buckets(settings.sagemaker_shape_buckets),
                stands_in_for=settings.sagemaker_stands_in_for,
                path=SageMakerPath(max_batch=settings.sagemaker_max_batch),
            )
        return cls(
            chunk_size=settings.chunk_size,
            max_concurrency=settings.map_max_concurrency,
            max_chunk_concurrency=settings.chunk_concurrency,
            prices=prices,
            region=settings.aws_region,
            shape=Shape(
                chunk_size=settings.chunk_size,
                map_concurrency=settings.map_max_concurrency,
                chunk_concurrency=settings.chunk_concurrency,
                chunk_memory_mb=settings.chunk_memory_mb,
            ),
            deployment=deployment,
            sagemaker_unpriced=bool(settings.sagemaker_endpoint_name) and instance is None,
        )


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

    record = record.model_copy(update=_own_usage(ports.store, ports.ledger, ports.clock, prices))
    catalogue = ports.catalogue
    concurrency = plan_concurrency(
        [spec.throughput for spec in map(catalogue.get, sorted(plan.models)) if spec is not None]
        or [catalogue.models[0].throughput],
        chunks=len(plan.chunk_ids),
        max_map_concurrency=stack.max_concurrency,
        max_chunk_concurrency=stack.max_chunk_concurrency,
    )
    running = record.model_copy(update={**concurrency.model_dump(), "status": BatchStatus.RUNNING})
    if not ports.ledger.create_batch(batch_id, running):
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
        f"{plan.images_total} images in {len(plan.chunk_ids)} chunks",
    )


def _restart_if_running(
    manifest: ManifestObject, existing: BatchRecord, starter: BatchStarter, stack: StackOptions
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
    stack: StackOptions,
    prices: RegionPrices,
) -> tuple[BatchPlan, BatchRecord] | IngestOutcome:
    """One pass over the manifest, then either a rejection (recorded) or the chunk files
    uploaded and the batch record to create."""
    batch_id, store, ledger = manifest.batch_id, ports.store, ports.ledger
    try:
        plan = plan_for_stack(
            store.open_manifest(manifest.key),
            manifest.key,
            batch_id=batch_id,
            catalogue=ports.catalogue,
            stack=stack,
            spool=spool,
            at_zero=ports.endpoint_at_zero() if ports.endpoint_at_zero is not None else None,
            throughput=ports.throughput,
        )
    except ManifestError as exc:
        return _reject_unreadable(manifest, exc, store=store, ledger=ledger)
    reason = assess_plan(plan, stack, prices)
    errors_key = None
    if plan.errors_path is not None:
        errors_key = f"reports/{batch_id}/errors.jsonl"
        store.upload_file(str(plan.errors_path), errors_key, "application/x-ndjson")
    record = _batch_record(plan, manifest, errors_key)
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


def plan_for_stack(
    stream: BinaryIO,
    key: str,
    *,
    batch_id: str,
    catalogue: ModelCatalogue,
    stack: StackOptions,
    spool: Path,
    at_zero: bool | None = None,
    throughput: EndpointThroughput | None = None,
) -> BatchPlan:
    """What ingest does with a manifest on this stack, short of uploading: every line checked
    and routed, the backend chosen, chunk files spooled (the estimate is assess_plan's).
    `at_zero`: whether the endpoint has no instance up (None: assume it has none);
    `throughput`: the endpoint's measured speeds (None: the data file's reference figures).
    `imagebatch estimate` and `validate` call this too, so they show what ingest would do."""
    deployment = stack.deployment
    if deployment is not None and at_zero is not None:
        deployment = replace(deployment, at_zero=at_zero)
    return plan_batch(
        stream,
        key,
        batch_id=batch_id,
        catalogue=catalogue,
        chunk_size=stack.chunk_size,
        spool=spool,
        deployment=deployment,
        endpoint_seconds=(
            EndpointSeconds(
                throughput,
                deployment.endpoint_name,
                deployment.instance_type,
                deployment.model_id,
            )
            if throughput is not None and deployment is not None
            else None
        ),
        prices=stack.prices,
        shape=stack.shape,
        region=stack.region,
    )


def _estimate(plan: BatchPlan, stack: StackOptions, prices: RegionPrices) -> BatchEstimate:
    chunks = list(zip(plan.chunk_backends, plan.chunk_sizes, plan.chunk_shapes, strict=True))
    if not any(backend == "sagemaker" for backend, _, _ in chunks):
        return estimate_batch(
            plan.estimate_inference_micro_usd, plan.chunk_sizes, prices, stack.shape
        )
    return estimate_mixed_batch(
        plan.inference_exact,
        [n for backend, n, _ in chunks if backend == "bedrock"],
        [(n, shapes) for backend, n, shapes in chunks if backend == "sagemaker"],
        prices,
        stack.shape,
        path=stack.deployment.path if stack.deployment else SageMakerPath(),
        capped=plan.settings.max_cost_usd is not None,
        pixels=plan.pixels_total // max(1, plan.images_total),
    )


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


def _batch_record(plan: BatchPlan, manifest: ManifestObject, errors_key: str | None) -> BatchRecord:
    settings = plan.settings
    estimate = plan.estimate
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
        "chunks_total": len(plan.chunk_ids),
        "estimate_total_micro_usd": (
            estimate.total_micro_usd if estimate else plan.estimate_inference_micro_usd
        ),
        "estimate_inference_micro_usd": plan.estimate_inference_micro_usd,
        "estimate_orchestration_micro_usd": estimate.orchestration_micro_usd if estimate else None,
        "estimate_storage_micro_usd": estimate.storage_micro_usd if estimate else None,
        "overhead_reserve_micro_usd": estimate.overhead_reserve_micro_usd if estimate else None,
        "max_cost_micro_usd": (
            int(settings.max_cost_usd * MICRO) if settings.max_cost_usd is not None else None
        ),
        "errors_key": errors_key,
    }
    # None is an attribute the item leaves out (it always was): not set, so not written
    return BatchRecord.model_validate(
        {name: value for name, value in fields.items() if value is not None}
    )


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
        ChunkRef(chunk_id=chunk_id, key=chunk_key(batch_id, chunk_id), images=size, backend=backend)
        for chunk_id, size, backend in zip(
            plan.chunk_ids, plan.chunk_sizes, plan.chunk_backends, strict=True
        )
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
