"""Counted AWS operations and what they cost: the orchestration and storage side of the ledger.

Each Lambda counts what it did (requests to S3 and DynamoDB, bytes written, its own billed
duration and memory) in a `Meter`; the chunk's ledger commit ADDs the counts to the batch
summary. Prices come from data/aws_prices.json and are applied when a summary is read, so
a category's cost is rounded once, not once per chunk. Budget reservations, which must be
exact integers before anything is spent, round up (`ceil_micro`) instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt

from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.telemetry import TELEMETRY_LINES, invocation_lines
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.money import MICRO, round_micro

# DynamoDB bills writes per 1 KB and strongly consistent reads per 4 KB of item size;
# a transactional write costs two write units per KB.
_WRITE_UNIT_BYTES = 1024
_READ_UNIT_BYTES = 4096
# Write units are billed on the larger of the item before and after an update; the summary
# and rollup items are not read before a commit, so their size is bounded: these bounds
# cover everything but the batch's tags, which both carry and which are added by their
# measured size (tags_bytes: up to 50 keys of 128 and values of 256 characters, ~19 KB).
SUMMARY_SIZE_BOUND = 3072
ROLLUP_SIZE_BOUND = 1024

_MB_MS_PER_GB_S = Decimal(1024 * 1000)
_BYTES_PER_GB = Decimal(1024**3)


class Usage(BaseModel):
    """Counted operations; every field is an integer that the ledger ADDs up."""

    model_config = ConfigDict(frozen=True)
    # Never negative: counts come back from S3 (pending files, SageMaker request objects),
    # where a negative one would be a credit to the batch's budget.
    sfn_transitions: NonNegativeInt = 0
    lambda_requests: NonNegativeInt = 0
    # billed duration (ms, rounded up) x configured memory (MB)
    lambda_mb_ms: NonNegativeInt = 0
    ddb_write_units: NonNegativeInt = 0
    ddb_read_units: NonNegativeInt = 0
    s3_put_requests: NonNegativeInt = 0
    s3_get_requests: NonNegativeInt = 0
    s3_bytes_written: NonNegativeInt = 0
    sqs_requests: NonNegativeInt = 0
    sns_publishes: NonNegativeInt = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in USAGE_FIELDS})

    def ledger_fields(self) -> dict[str, int]:
        """Names the summary item keeps these counters under."""
        return {f"use_{name}": getattr(self, name) for name in USAGE_FIELDS}

    @classmethod
    def from_summary(cls, summary: BatchRecord) -> Usage:
        return cls(**{name: int(getattr(summary, f"use_{name}")) for name in USAGE_FIELDS})


USAGE_FIELDS: tuple[str, ...] = tuple(Usage.model_fields)


class Meter:
    """Thread-safe counters for one invocation; adapters tick it, the commit reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(USAGE_FIELDS, 0)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value

    def usage(self) -> Usage:
        with self._lock:
            return Usage(**self._counts)

    def take(self) -> Usage:
        """The counts so far, and start again from zero (they are about to be committed)."""
        with self._lock:
            usage = Usage(**self._counts)
            self._counts = dict.fromkeys(USAGE_FIELDS, 0)
            return usage


class LambdaClock:
    """The invocation's own billing inputs: configured memory and time since it started;
    `request_id`, the Lambda request id, names the invocation where a charge must be once
    per invocation (a finalize run that waits)."""

    def __init__(
        self, memory_mb: int, started: float | None = None, *, request_id: str | None = None
    ) -> None:
        self.memory_mb = memory_mb
        self.request_id = request_id
        self._started = time.monotonic() if started is None else started

    def elapsed_s(self) -> float:
        return time.monotonic() - self._started


def billed_mb_ms(seconds: float, memory_mb: int) -> int:
    """Lambda bills duration rounded up to the millisecond, times configured memory."""
    return math.ceil(seconds * 1000) * memory_mb


# --- DynamoDB item sizes -------------------------------------------------------------------


def _value_size(value: Mapping[str, Any]) -> int:  # noqa: PLR0911 - one return per type
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode("utf-8"))
    if kind == "N":
        digits = len(str(inner).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "B":
        return len(inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in inner)
    if kind in {"SS", "NS", "BS"}:
        return sum(_value_size({kind[0]: v}) for v in inner)
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: Mapping[str, Any]) -> int:
    """Size of a wire-format item the way DynamoDB bills it: names plus values, in bytes."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def write_units(size_bytes: int, *, transactional: bool = False) -> int:
    units = max(1, math.ceil(size_bytes / _WRITE_UNIT_BYTES))
    return 2 * units if transactional else units


def read_units(size_bytes: int, *, transactional: bool = False) -> int:
    units = max(1, math.ceil(size_bytes / _READ_UNIT_BYTES))
    return 2 * units if transactional else units


def tags_bytes(tags: Mapping[str, str] | None) -> int:
    """The size DynamoDB bills for a `tags` map attribute (its name, 3 bytes for the map,
    each key and string value), as the summary and every day rollup carry it."""
    if not tags:
        return 0
    return len("tags") + 3 + sum(len(k.encode()) + len(v.encode()) for k, v in tags.items())


def indexed_write_units(size_bytes: int, *, transactional: bool = True) -> int:
    """A write of an item projected into gsi1 (the summary under BATCHES, a rollup under
    COSTS; ProjectionType ALL): the table's units and the index replica's, 1 a KB of the
    item (DynamoDB bills each GSI a write of its own; moto reports neither, so the units
    are computed from the size the way DynamoDB bills them)."""
    return write_units(size_bytes, transactional=transactional) + write_units(size_bytes)


def summary_write_units(tag_bytes: int = 0, *, transactional: bool = True) -> int:
    """One update of a batch summary carrying `tag_bytes` of tags, its gsi1 replica included."""
    return indexed_write_units(SUMMARY_SIZE_BOUND + tag_bytes, transactional=transactional)


def rollup_write_units(tag_bytes: int = 0, *, transactional: bool = True) -> int:
    """One update of a day rollup carrying `tag_bytes` of tags, its gsi1 replica included."""
    return indexed_write_units(ROLLUP_SIZE_BOUND + tag_bytes, transactional=transactional)


SUMMARY_WRITE_UNITS = summary_write_units()
ROLLUP_WRITE_UNITS = rollup_write_units()


# --- pricing -----------------------------------------------------------------------------


class CostBreakdown(BaseModel):
    """Micro-dollars by category. Exact Decimals; `rounded()` turns them into integers once."""

    model_config = ConfigDict(frozen=True)
    inference: Decimal = Decimal(0)
    orchestration: Decimal = Decimal(0)
    storage: Decimal = Decimal(0)
    lines: dict[str, Decimal] = {}

    @property
    def total(self) -> Decimal:
        return self.inference + self.orchestration + self.storage

    def telemetry(self) -> dict[str, int]:
        """The orchestration's telemetry lines (init, logs, traces), each rounded once: part
        of the orchestration, not beside it."""
        return {
            label: round_micro(self.lines.get(line, Decimal(0)))
            for line, label in TELEMETRY_LINES.items()
        }

    def rounded(self) -> dict[str, int]:
        return {
            "inference": round_micro(self.inference),
            "orchestration": round_micro(self.orchestration),
            "storage": round_micro(self.storage),
            "total": round_micro(self.total),
        }


def price_usage(
    usage: Usage,
    prices: RegionPrices,
    *,
    inference_micro_usd: Decimal | int = 0,
    lambda_arch: str = "arm64",
) -> CostBreakdown:
    """Counted operations x prices, and what each counted Lambda invocation costs besides
    its request and duration (costs.telemetry: INIT, logs, traces), all orchestration.
    Storage is one month of the bytes written (S3 Standard)."""

    def usd(name: str, quantity: Decimal | int) -> Decimal:
        return prices.service(name).usd * Decimal(quantity) * MICRO

    lines = {
        "stepfunctions_transitions": usd(
            "stepfunctions_standard_transition", usage.sfn_transitions
        ),
        "lambda_requests": usd("lambda_request", usage.lambda_requests),
        "lambda_duration": usd(
            f"lambda_{lambda_arch}_gb_second", Decimal(usage.lambda_mb_ms) / _MB_MS_PER_GB_S
        ),
        "dynamodb_writes": usd("dynamodb_write_request_unit", usage.ddb_write_units),
        "dynamodb_reads": usd("dynamodb_read_request_unit", usage.ddb_read_units),
        "s3_puts": usd("s3_put_request", usage.s3_put_requests),
        "s3_gets": usd("s3_get_request", usage.s3_get_requests),
        "sqs_requests": usd("sqs_request", usage.sqs_requests),
        "sns_publishes": usd("sns_publish", usage.sns_publishes),
        "s3_storage_month": usd(
            "s3_standard_gb_month", Decimal(usage.s3_bytes_written) / _BYTES_PER_GB
        ),
        # billed per invocation but measured by no Meter: priced from the same invocations
        # the ledger counts as Lambda requests (one per invocation that reached its commit)
        **invocation_lines(usage.lambda_requests, prices, lambda_arch),
    }
    return CostBreakdown(
        inference=Decimal(inference_micro_usd),
        orchestration=sum(
            (v for k, v in lines.items() if k != "s3_storage_month"), start=Decimal(0)
        ),
        storage=lines["s3_storage_month"],
        lines=lines,
    )


def summary_costs(summary: BatchRecord, prices: RegionPrices) -> CostBreakdown:
    """The cost categories of a batch summary item, from its counters. Inference is the
    image records' costs plus self-hosted instance time no image record carries (rework)."""
    return price_usage(
        Usage.from_summary(summary),
        prices,
        inference_micro_usd=summary.cost_micro_usd + summary.rework_micro_usd,
    )


def per_image(breakdown: CostBreakdown, images: int) -> dict[str, dict[str, int]]:
    """Cost per image and per 1,000 images for each category (integer micro-dollars)."""
    keys = ("inference", "orchestration", "storage", "total")
    values = {key: getattr(breakdown, key) for key in keys}
    if images <= 0:
        return {"per_image": {}, "per_1000": {}}
    return {
        "per_image": {key: round_micro(value / images) for key, value in values.items()},
        "per_1000": {key: round_micro(value * 1000 / images) for key, value in values.items()},
    }
