"""The plan of a batch: one streaming pass over a manifest that checks each line, routes and
prices each image, and spools single-backend chunk files; memory stays flat at any size."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, BinaryIO

from imagebatch.backends.routing import (
    Backend,
    Deployment,
    FlexibleImages,
    choose_for_flexible,
    job_for_backend,
    wake_micro_usd,
)
from imagebatch.backends.routing import EndpointSeconds as EndpointSecondsFn
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import RegionPrices, load_aws_prices
from imagebatch.errors import ManifestError
from imagebatch.manifest.checks import reserved_tags_for
from imagebatch.manifest.reader import ManifestReader, format_for_key
from imagebatch.manifest.schema import BatchSettings, InvalidLine
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.money import MICRO, ceil_micro
from imagebatch.models.records import ChunkFile, ImageJob
from imagebatch.models.sagemaker_contract import shape_key
from imagebatch.planning.pricing import ImagePricer
from imagebatch.planning.reuse import MadeImages, ReuseTally, reused_in_chunk
from imagebatch.planning.routing import expand_item, route_entry
from imagebatch.planning.stack_options import BatchLimits

# Every chunk of a plan is appended to this one file in the spool dir: creating a file per
# chunk cost 3.5 of 20 s for a 1,000,000-line manifest (20,000 chunks).
CHUNKS_SPOOL = "chunks.spool"


@dataclass(frozen=True, slots=True)
class PlannedChunk:
    """One chunk file waiting in the spool: its id, images, the backend that makes it, its
    distinct call shapes, and where its JSON (a ChunkFile) lies in spool/CHUNKS_SPOOL."""

    chunk_id: str
    images: int
    backend: Backend
    shapes: int
    offset: int
    length: int


@dataclass
class BatchPlan:
    """What one streaming pass over a manifest found; chunk files wait in a spool file."""

    settings: BatchSettings
    spool: Path
    chunks: list[PlannedChunk] = field(default_factory=list)
    items_valid: int = 0
    images_total: int = 0
    invalid_lines: int = 0
    errors_path: Path | None = None
    # inference only; the verdict (planning.verdict) adds the other categories
    estimate_inference_micro_usd: int = 0
    models: set[str] = field(default_factory=set)
    # images per backend, and why images either backend could make went where they did
    backends: dict[str, int] = field(default_factory=dict)
    choice: str | None = None
    # exact expected inference (rounded up once into estimate_inference_micro_usd), pixels made
    inference_exact: Decimal = Decimal(0)
    inference_by_backend: dict[str, Decimal] = field(default_factory=dict)
    # The endpoint's cold start and idle tail this batch would cause (it is at zero), if any.
    endpoint_wake_micro_usd: int = 0
    pixels_total: int = 0
    # The images the image index says are already made (reuse, docs/reuse.md): left out of
    # the inference above. None: not looked up (offline, or reuse off), so reuse is unknown.
    reuse: ReuseTally | None = None
    # The cap is the stack's DefaultMaxCostUsd: the manifest set no max_cost_usd.
    cap_from_stack: bool = False

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
        chunk = self.chunks[index]
        if spool_fd is not None:
            return os.pread(spool_fd, chunk.length, chunk.offset)
        with (self.spool / CHUNKS_SPOOL).open("rb") as spooled:
            spooled.seek(chunk.offset)
            return spooled.read(chunk.length)


# Kept whole: one streaming pass in which reading, routing and spooling share the reader's
# state; split, the manifest would be read twice or held in memory.
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
    made: MadeImages | None = None,
    limits: BatchLimits | None = None,
) -> BatchPlan:
    """Validate, route and chunk; memory stays flat at any manifest size.

    One pass over the manifest checks each line and routes it (backends/routing.py): an image
    only one backend can make goes straight into that backend's chunks; an image either
    could make is priced both ways and set aside in a spool file. Then the backend for those
    is chosen and they are chunked. `endpoint_seconds`: what the endpoint is expected to take
    per image (its own measurements where it has them); without it, the data file's reference
    figure. `region`: Bedrock serves each model in some regions only (data/bedrock_models.json).
    `made`: the image index; each chunk's images already made are left out of the inference
    (one batched read per chunk, as the chunk itself will look them up).
    `limits`: the stack's default cap and ceiling, applied to the settings before the pass.
    """
    # Kept whole (82 lines with its docstring): the two passes (route, then chunk what was
    # set aside) share the open errors file and the chunker, whose exit writes the last chunks.
    reader = ManifestReader(
        stream,
        format_for_key(key),
        catalogue,
        endpoint_model=deployment.model_id if deployment else None,
        reserved_tags=reserved_tags_for(key),
    )
    plan = _capped(reader, limits or BatchLimits(), spool)
    if made is not None:
        plan.reuse = ReuseTally()
    pricer = ImagePricer(catalogue, deployment, endpoint_seconds)
    flexible_path = spool / "flexible.jsonl"
    flexible = FlexibleImages()
    endpoint_needed = False
    today = datetime.now(UTC).date()
    with (
        _ErrorsFile(plan) as errors,
        _Chunker(
            plan, batch_id, chunk_size, pricer, deployment, catalogue=catalogue, made=made
        ) as chunker,
    ):
        with flexible_path.open("w", encoding="utf-8") as set_aside:
            for entry in reader:
                if isinstance(entry, InvalidLine):
                    errors.write(entry)
                    continue
                route = route_entry(entry, plan.settings, catalogue, deployment, today, region)
                if isinstance(route, InvalidLine):
                    errors.write(route)
                    continue
                plan.items_valid += 1
                endpoint_needed = endpoint_needed or route == "sagemaker"
                for job in expand_item(
                    entry.item, entry.line, reader.settings.tags, reuse=reader.settings.reuse
                ):
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
                cap_micro_usd=(
                    int(plan.settings.max_cost_usd * MICRO)
                    if plan.settings.max_cost_usd is not None
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
        # charged to the batches that caused it as endpoint overhead, not in the estimate;
        # admission counts it against the cap (planning.verdict)
        plan.endpoint_wake_micro_usd = ceil_micro(wake_micro_usd(deployment))
    return plan


def _capped(reader: ManifestReader, limits: BatchLimits, spool: Path) -> BatchPlan:
    """The plan's settings under the stack's limits: a cap above the ceiling refuses the
    manifest before its items are read (a line error of its header), and a manifest without a
    cap gets the stack's default, so every batch is held to a budget on every path."""
    settings = reader.settings
    ceiling, cap = limits.max_cost_ceiling_usd, settings.max_cost_usd
    if cap is not None and ceiling is not None and cap > ceiling:
        raise ManifestError(
            f"max_cost_usd ${cap} is above this stack's ceiling "
            f"${ceiling} (MaxCostCeilingUsd): lower it or split the manifest",
            line=reader.settings_line or 1,
            field="batch.max_cost_usd",
        )
    if cap is not None or limits.default_max_cost_usd is None:
        return BatchPlan(settings=settings, spool=spool)
    default = settings.model_copy(update={"max_cost_usd": limits.default_max_cost_usd})
    return BatchPlan(settings=default, spool=spool, cap_from_stack=True)


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


class _Chunker:
    """Images into single-backend chunks of chunk_size, appended to the plan's spool file."""

    def __init__(
        self,
        plan: BatchPlan,
        batch_id: str,
        chunk_size: int,
        pricer: ImagePricer,
        deployment: Deployment | None,
        *,
        catalogue: ModelCatalogue,
        made: MadeImages | None,
    ) -> None:
        self._plan = plan
        self._catalogue = catalogue
        self._made = made
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
        if self._made is not None and plan.reuse is not None:
            self._leave_out_reused(jobs, backend, self._made, plan.reuse)
        chunk_id = f"{len(plan.chunks):05d}"
        chunk = ChunkFile(
            batch_id=self._batch_id,
            chunk_id=chunk_id,
            backend=backend,
            output_prefix=plan.settings.output_prefix,
            images=jobs,
            tags=plan.settings.tags,
        )
        body = chunk.model_dump_json(exclude_defaults=True).encode()
        offset = self._out.tell()
        self._out.write(body)
        plan.chunks.append(
            PlannedChunk(
                chunk_id=chunk_id,
                images=len(jobs),
                backend=backend,
                shapes=len({shape_key(job) for job in jobs}),
                offset=offset,
                length=len(body),
            )
        )
        plan.images_total += len(jobs)

    def _leave_out_reused(
        self, jobs: list[ImageJob], backend: Backend, made: MadeImages, tally: ReuseTally
    ) -> None:
        """Take the inference of the chunk's images already made back out of the plan: the
        chunk will copy them (pipeline.reuse), which the rest of the estimate prices as it
        prices a made image's PUT."""
        plan = self._plan
        hits = reused_in_chunk(jobs, backend, catalogue=self._catalogue, made=made)
        for job, hit in zip(jobs, hits, strict=True):
            if not hit:
                continue
            price = self._pricer.price(job, backend)
            plan.inference_exact -= price
            plan.inference_by_backend[backend] -= price
            tally.images += 1
            tally.saved_exact += price
