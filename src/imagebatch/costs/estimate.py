"""Estimates before a run: what a batch costs on each backend, how long it takes, which to pick.

Every figure comes from data files (prices in aws_prices.json and bedrock_models.json,
speeds in throughput.json); the functions here are pure so the CLI, ingest and tests share
them. An option's cost is linear in the number of images (a fixed part such as a cold
start, plus a per-image part), which makes break-even points exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict

from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.transitions import BATCH_TRANSITIONS, CONTINUATION_TRANSITIONS
from imagebatch.costs.usage import (
    ROLLUP_WRITE_UNITS,
    SUMMARY_WRITE_UNITS,
    CostBreakdown,
    Usage,
    price_usage,
    rollup_write_units,
    summary_write_units,
)
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.money import ceil_micro

# An image record (ids, model, seed, hash, key, price source) stays under 1 KB; with a
# failure reason (at most 1,000 characters) under 3 KB.
IMAGE_RECORD_BYTES = 1024
IMAGE_RECORD_BOUND_BYTES = 3072
# PNG of a generated photo-like image: about 1.5 bytes per pixel (RGB, deflate); bounds use 4.
EXPECTED_PNG_BYTES_PER_PIXEL = Decimal("1.5")
BOUND_PNG_BYTES_PER_PIXEL = 4
# A chunk refused for budget does a handful of requests; its Lambda time is bounded by this.
REFUSAL_SECONDS_BOUND = 10


class _Figure(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: str
    retrieved: date


class BedrockSpeed(_Figure):
    seconds_per_image: Decimal
    workload: str


class InstanceSpeed(_Figure):
    instance_type: str
    seconds_per_image: Decimal
    workload: str


class Seconds(_Figure):
    seconds: Decimal


class LambdaSeconds(_Figure):
    submit: Decimal
    record: Decimal


class ContactSheetSeconds(_Figure):
    fixed: Decimal
    per_image: Decimal

    def for_images(self, images: int) -> Decimal:
        return self.fixed + self.per_image * images


class SpeedAssumptions(BaseModel):
    model_config = ConfigDict(frozen=True)
    about: str
    bedrock: BedrockSpeed
    sagemaker: tuple[InstanceSpeed, ...]
    sagemaker_lambda_seconds: LambdaSeconds
    contact_sheet_seconds: ContactSheetSeconds
    sagemaker_cold_start_seconds: Seconds
    sagemaker_idle_tail_seconds: Seconds


@lru_cache(maxsize=1)
def load_speed_assumptions() -> SpeedAssumptions:
    text = resources.files("imagebatch.data").joinpath("throughput.json").read_text("utf-8")
    return SpeedAssumptions.model_validate(json.loads(text))


class Shape(BaseModel):
    """How the pipeline is deployed: what decides orchestration counts and wall time."""

    model_config = ConfigDict(frozen=True)
    chunk_size: int = 50
    map_concurrency: int = 10
    # template.yaml's ChunkConcurrency and ChunkMemorySize defaults
    chunk_concurrency: int = 50
    chunk_memory_mb: int = 256
    chunk_timeout_s: int = 600
    ingest_memory_mb: int = 1024
    finalize_memory_mb: int = 512
    contact_sheet_memory_mb: int = 1024
    width: int = 1024
    height: int = 1024


def chunk_usage(
    images: int, lambda_seconds: Decimal, memory_mb: int, png_bytes: int, tag_bytes: int = 0
) -> Usage:
    """Operations one chunk attempt makes on the Bedrock path (see generate.generate_chunk);
    the summary and rollup carry the batch's tags (`tag_bytes`, costs.usage.tags_bytes)."""
    return Usage(
        sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
        lambda_requests=1,
        lambda_mb_ms=math.ceil(lambda_seconds * 1000) * memory_mb,
        # summary GetItem, BatchGetItem per image, reservation + commit transactions
        ddb_read_units=1 + images,
        ddb_write_units=images * 2 * math.ceil(IMAGE_RECORD_BYTES / 1024)
        + 2 * summary_write_units(tag_bytes)
        + rollup_write_units(tag_bytes)
        + 4,
        # the chunk file, and the check for what a failed attempt left to commit
        s3_get_requests=2,
        s3_put_requests=images,
        s3_bytes_written=png_bytes * images,
    )


def batch_usage(chunks: int, images: int, shape: Shape, tag_bytes: int = 0) -> Usage:
    """Operations made once per batch: ingest, chunk files, finalize."""
    chunk_file_bytes = 600 * images + 200 * chunks
    return Usage(
        sfn_transitions=BATCH_TRANSITIONS.batch,
        lambda_requests=2,
        # ingest streams the manifest (~0.5 ms/image measured by bench_ingest) and finalize
        # reads the summary; both about a second at these sizes
        lambda_mb_ms=(1000 + images // 2) * shape.ingest_memory_mb
        + 1000 * shape.finalize_memory_mb,
        ddb_read_units=3,
        # finalize writes the summary twice (its fence, then the settle) and HEADs each report
        ddb_write_units=2 + 2 * summary_write_units(tag_bytes),
        s3_get_requests=1 + 1 + 1,
        s3_put_requests=chunks + 2,
        s3_bytes_written=chunk_file_bytes + 1024,
    )


# A contact sheet's PNG is under 64 KB per 128-px tile; index.html inlines a 192-px JPEG
# (about 10 KB in base64) and a caption per image.
SHEET_BYTES_PER_IMAGE = 16 * 1024
SHEET_BOUND_BYTES_PER_IMAGE = 96 * 1024


def contact_sheet_usage(
    images: int, chunks: int, *, seconds: Decimal, memory_mb: int, bound: bool = False
) -> Usage:
    """What the contact sheet counts (pipeline/contact_sheet_cost.py): its Lambda, the summary
    and the image records read, the chunk index and files, one GET per image made, the sheet
    and index PUTs, and its commit (with `bound`: its hold, and a continued run's retry and a
    failed run's Catch state)."""
    sheets = max(1, math.ceil(images / 500))
    return Usage(
        # bound: a continuation (its retry) that fails (its Catch state)
        sfn_transitions=CONTINUATION_TRANSITIONS + 1 if bound else 0,
        lambda_requests=1,
        lambda_mb_ms=math.ceil(seconds * 1000) * memory_mb,
        ddb_read_units=2 + math.ceil(images * IMAGE_RECORD_BYTES / 4096),
        ddb_write_units=SUMMARY_WRITE_UNITS
        + ROLLUP_WRITE_UNITS
        + (2 * SUMMARY_WRITE_UNITS + 6 if bound else 0),
        s3_get_requests=1 + chunks + images,
        s3_put_requests=sheets + 1,
        s3_bytes_written=(SHEET_BOUND_BYTES_PER_IMAGE if bound else SHEET_BYTES_PER_IMAGE)
        * max(1, images),
    )


def expected_contact_sheet(images: int, chunks: int, shape: Shape) -> Usage:
    seconds = load_speed_assumptions().contact_sheet_seconds.for_images(images)
    return contact_sheet_usage(
        images, chunks, seconds=seconds, memory_mb=shape.contact_sheet_memory_mb
    )


def contact_sheet_reserve(images: int, chunks: int, shape: Shape) -> Usage:
    """Held back at ingest so a batch that spent its cap still gets its contact sheet: twice
    the expected run, bounded."""
    seconds = 2 * load_speed_assumptions().contact_sheet_seconds.for_images(images)
    return contact_sheet_usage(
        images, chunks, seconds=seconds, memory_mb=shape.contact_sheet_memory_mb, bound=True
    )


def chunk_reservation(
    inference_micro_usd: int,
    images: int,
    *,
    memory_mb: int,
    lambda_seconds_bound: float,
    pixels_bound: int,
    prices: RegionPrices,
    tag_bytes: int = 0,
) -> tuple[int, int]:
    """(reservation, its overhead part): an upper bound of what one chunk attempt charges.

    The Lambda is bounded by its timeout, each PNG by 4 bytes a pixel, each image record by
    IMAGE_RECORD_BOUND_BYTES and each image by its own cost rollup, the summary and the
    rollups by their bounds plus `tag_bytes` (costs.usage.tags_bytes of the batch's tags: the
    commit charges them at that size), so the settled charge cannot exceed the hold.
    """
    usage = Usage(
        sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
        lambda_requests=1,
        lambda_mb_ms=math.ceil(lambda_seconds_bound * 1000) * memory_mb,
        ddb_read_units=2 + images,
        ddb_write_units=images * 2 * math.ceil(IMAGE_RECORD_BOUND_BYTES / 1024)
        + 2 * summary_write_units(tag_bytes)
        + images * rollup_write_units(tag_bytes)
        + 4,
        s3_get_requests=1,
        s3_put_requests=images,
        s3_bytes_written=(pixels_bound * BOUND_PNG_BYTES_PER_PIXEL + 1024) * images,
    )
    overhead = ceil_micro(price_usage(usage, prices).total)
    return inference_micro_usd + overhead, overhead


class BackendOption(BaseModel):
    """One way to make the batch; cost(n) = fixed + n x per_image (micro-dollars, exact)."""

    model_config = ConfigDict(frozen=True)
    name: str
    backend: Literal["bedrock", "sagemaker"]
    model: str | None = None
    instance_type: str | None = None
    warm: bool | None = None
    fixed_micro_usd: Decimal
    inference_per_image_micro_usd: Decimal
    overhead_per_image_micro_usd: Decimal
    fixed_seconds: Decimal
    seconds_per_image: Decimal  # wall time per image with the deployment's parallelism
    source: str

    def cost_micro_usd(self, images: int) -> int:
        per_image = self.inference_per_image_micro_usd + self.overhead_per_image_micro_usd
        return ceil_micro(self.fixed_micro_usd + per_image * images)

    def wall_seconds(self, images: int) -> float:
        return float(self.fixed_seconds + self.seconds_per_image * images)


def _overhead_per_image(
    prices: RegionPrices, shape: Shape, lambda_seconds_per_image: Decimal, pixels: int
) -> tuple[Decimal, Decimal]:
    """(per-image overhead, fixed overhead) in micro-dollars, from a full chunk's usage."""
    n = shape.chunk_size
    png = int(pixels * EXPECTED_PNG_BYTES_PER_PIXEL)
    per_chunk = price_usage(
        chunk_usage(n, lambda_seconds_per_image * n, shape.chunk_memory_mb, png), prices
    )
    sheet_fixed = price_usage(expected_contact_sheet(0, 0, shape), prices).total
    sheet_chunk = price_usage(expected_contact_sheet(n, 1, shape), prices).total - sheet_fixed
    fixed = price_usage(batch_usage(0, 0, shape), prices).total + sheet_fixed
    per_image_files = (
        price_usage(Usage(s3_bytes_written=600, s3_put_requests=0), prices).total
        + price_usage(Usage(s3_put_requests=1), prices).total / n
    )
    return per_chunk.total / n + per_image_files + sheet_chunk / n, fixed


def bedrock_overhead_per_image(prices: RegionPrices, shape: Shape) -> Decimal:
    """What a Bedrock image costs besides its price: its share of a full chunk's Lambda,
    transitions, ledger writes, PNG PUT and storage, and of the contact sheet."""
    lambda_s = load_speed_assumptions().bedrock.seconds_per_image / shape.chunk_concurrency
    overhead, _ = _overhead_per_image(prices, shape, lambda_s, shape.width * shape.height)
    return overhead


def bedrock_options(
    models: Iterable[str], catalogue: ModelCatalogue, prices: RegionPrices, shape: Shape
) -> list[BackendOption]:
    speed = load_speed_assumptions().bedrock
    parallel = Decimal(shape.map_concurrency * shape.chunk_concurrency)
    # the chunk Lambda waits on Bedrock: with chunk_concurrency calls in flight it is billed
    # seconds_per_image / chunk_concurrency per image
    lambda_s = speed.seconds_per_image / shape.chunk_concurrency
    overhead, fixed = _overhead_per_image(prices, shape, lambda_s, shape.width * shape.height)
    options = []
    for model_id in models:
        spec = catalogue.get(model_id)
        if spec is None:
            continue
        price = spec.price()
        # More calls in flight do not beat the model's images-per-minute quota: the chunks
        # pace themselves to it (backends/concurrency.py), so neither does the estimate.
        paced = Decimal(60) / Decimal(spec.throughput.images_per_minute)
        options.append(
            BackendOption(
                name=f"bedrock {model_id}",
                backend="bedrock",
                model=model_id,
                fixed_micro_usd=fixed,
                inference_per_image_micro_usd=Decimal(price.micro_usd_per_image),
                overhead_per_image_micro_usd=overhead,
                fixed_seconds=Decimal(5),
                seconds_per_image=max(speed.seconds_per_image / parallel, paced),
                source=f"{price.source} ({price.retrieved}); speed: {speed.source}",
            )
        )
    return options


def sagemaker_options(
    instance_types: Sequence[str], prices: RegionPrices, shape: Shape
) -> list[BackendOption]:
    data = load_speed_assumptions()
    speeds = {s.instance_type: s for s in data.sagemaker}
    cold = data.sagemaker_cold_start_seconds.seconds
    tail = data.sagemaker_idle_tail_seconds.seconds
    # async endpoint path: the chunk Lambda submits and returns; SNS -> SQS -> result Lambda
    overhead, fixed = _overhead_per_image(prices, shape, Decimal("0.02"), 512 * 512)
    messaging = price_usage(Usage(sns_publishes=1, sqs_requests=3, lambda_requests=1), prices)
    overhead += messaging.total / shape.chunk_size
    options = []
    for instance_type in instance_types:
        speed = speeds.get(instance_type)
        if speed is None:
            continue
        per_second = prices.instance(instance_type).micro_usd_per_second
        for warm in (True, False):
            start = Decimal(0) if warm else cold
            options.append(
                BackendOption(
                    name=f"sagemaker {instance_type} ({'warm' if warm else 'cold'})",
                    backend="sagemaker",
                    instance_type=instance_type,
                    warm=warm,
                    fixed_micro_usd=fixed + per_second * (start + tail),
                    inference_per_image_micro_usd=per_second * speed.seconds_per_image,
                    overhead_per_image_micro_usd=overhead,
                    fixed_seconds=start + 5,
                    seconds_per_image=speed.seconds_per_image,
                    source=f"{prices.instance(instance_type).source}; speed: {speed.source} "
                    f"({speed.workload})",
                )
            )
    return options


def choose_backend(
    options: Sequence[BackendOption], images: int, deadline_s: float | None = None
) -> BackendOption | None:
    """The cheapest option that finishes within the deadline; None when none can."""
    fitting = [o for o in options if deadline_s is None or o.wall_seconds(images) <= deadline_s]
    if not fitting:
        return None
    return min(fitting, key=lambda o: (o.cost_micro_usd(images), o.wall_seconds(images)))


def break_even(a: BackendOption, b: BackendOption) -> float | None:
    """Images at which a and b cost the same, when their lines cross at a positive count."""
    slope = (a.inference_per_image_micro_usd + a.overhead_per_image_micro_usd) - (
        b.inference_per_image_micro_usd + b.overhead_per_image_micro_usd
    )
    if slope == 0:
        return None
    n = (b.fixed_micro_usd - a.fixed_micro_usd) / slope
    return float(n) if n > 0 else None


class BatchEstimate(BaseModel):
    """What ingest records before a run: expected cost by category and the budget holdback."""

    model_config = ConfigDict(frozen=True)
    images: int
    chunks: int
    inference_micro_usd: int
    orchestration_micro_usd: int
    storage_micro_usd: int
    overhead_reserve_micro_usd: int

    @property
    def total_micro_usd(self) -> int:
        return self.inference_micro_usd + self.orchestration_micro_usd + self.storage_micro_usd


def estimate_batch(
    inference_micro_usd: int,
    chunk_sizes: Sequence[int],
    prices: RegionPrices,
    shape: Shape,
    tag_bytes: int = 0,
) -> BatchEstimate:
    """Expected cost of a Bedrock batch with these chunks, and the reserve that lets a chunk
    refused for budget record its images without going over the cap; the ledger's writes at
    the size of the batch's tags (`tag_bytes`)."""
    speed = load_speed_assumptions().bedrock
    lambda_s = speed.seconds_per_image / shape.chunk_concurrency
    png = int(shape.width * shape.height * EXPECTED_PNG_BYTES_PER_PIXEL)
    images, chunks = sum(chunk_sizes), len(chunk_sizes)
    usage = batch_usage(chunks, images, shape, tag_bytes)
    usage += expected_contact_sheet(images, chunks, shape)
    refusals = contact_sheet_reserve(images, chunks, shape)
    for n in chunk_sizes:
        usage = usage + chunk_usage(n, lambda_s * n, shape.chunk_memory_mb, png, tag_bytes)
        refusals = refusals + refusal_usage(n, shape.chunk_memory_mb, tag_bytes)
    costs: CostBreakdown = price_usage(usage, prices)
    return BatchEstimate(
        images=images,
        chunks=chunks,
        inference_micro_usd=inference_micro_usd,
        orchestration_micro_usd=ceil_micro(costs.orchestration),
        storage_micro_usd=ceil_micro(costs.storage),
        overhead_reserve_micro_usd=ceil_micro(
            price_usage(refusals, prices).total
            + price_usage(batch_usage(0, 0, shape, tag_bytes), prices).total
        ),
    )


def refusal_usage(images: int, memory_mb: int, tag_bytes: int = 0) -> Usage:
    """An upper bound of what a chunk refused for budget does: read, fail to reserve, record."""
    return Usage(
        sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
        lambda_requests=1,
        lambda_mb_ms=REFUSAL_SECONDS_BOUND * 1000 * memory_mb,
        ddb_read_units=2 + images,
        ddb_write_units=images * 2 * math.ceil(IMAGE_RECORD_BOUND_BYTES / 1024)
        + 2 * summary_write_units(tag_bytes)
        + images * rollup_write_units(tag_bytes)
        + 2,
        s3_get_requests=1,
    )
