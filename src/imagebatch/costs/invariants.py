"""What must hold for a finished batch, whatever faults it ran through: nothing lost, nothing
bought twice, every micro-dollar accounted for.

Pure: it takes plain data (the summary, the image records, the holds and rollups left in the
ledger, the keys under the batch's outputs, the ids in redrive.jsonl, the endpoint's windows
and the batch's overhead records) and returns one `Violation` per broken invariant and item.
`aws.batch_evidence` gathers that data from a ledger and a bucket (local or deployed, it only
reads); `imagebatch check` and `imagebatch local check` print it, the chaos e2e asserts it is
empty for every seed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from imagebatch.costs.budget import SPENT
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus

FINAL_STATUSES = frozenset(
    {BatchStatus.SUCCEEDED, BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.REJECTED}
)

# The invariants, by the name each violation line starts with.
FINAL_STATUS = "final-status"
PNG_HAS_RECORD = "png-has-one-record"
RECORD_HAS_PNG = "record-has-png"
PAID_IS_CHARGED = "paid-is-charged"
CHARGED_ADDS_UP = "charged-adds-up"
NO_HOLD_LEFT = "no-hold-left"
WITHIN_CAP = "within-cap"
ENDPOINT_SECONDS_ONCE = "endpoint-seconds-once"
REDRIVE_IS_FAILED = "redrive-is-failed"
INVARIANTS = (
    FINAL_STATUS,
    PNG_HAS_RECORD,
    RECORD_HAS_PNG,
    PAID_IS_CHARGED,
    CHARGED_ADDS_UP,
    NO_HOLD_LEFT,
    WITHIN_CAP,
    ENDPOINT_SECONDS_ONCE,
    REDRIVE_IS_FAILED,
)


@dataclass(frozen=True)
class Violation:
    invariant: str
    item: str
    detail: str

    def line(self) -> str:
        return f"{self.invariant}: {self.item}: {self.detail}"


@dataclass(frozen=True)
class BatchEvidence:
    """Everything the checker reads about one batch, as plain data."""

    batch_id: str
    summary: BatchRecord | None
    # the batch's IMAGE# records (image_id, status, cost_micro_usd, output_key, ...)
    images: Sequence[Mapping[str, Any]] = ()
    # the sort keys of the RESERVATION# items left in the batch's partition
    holds: Sequence[str] = ()
    # every key under outputs/<prefix><batch-id>/
    output_keys: Sequence[str] = ()
    # the `id` of each item of reports/<batch-id>/redrive.jsonl; None: there is no such file
    redrive_ids: Sequence[str] | None = None
    # the batch's DAY# cost rollups
    rollups: Sequence[Mapping[str, Any]] = ()
    # the batch's OVERHEAD# records (its share of endpoint instance time, per window)
    overhead: Sequence[Mapping[str, Any]] = ()
    # the recorded WINDOW# items of the endpoints the batch used
    windows: Sequence[Mapping[str, Any]] = ()
    # images Bedrock made and billed (per image) for this batch, where they can be counted
    # (the local AWS's Bedrock); None on a deployed stack: the bill says, later. The endpoint
    # bills instance time, not images: its windows are checked instead.
    paid_images: int | None = None


def check_batch(evidence: BatchEvidence) -> list[Violation]:
    """Every violation of every invariant, in INVARIANTS order; empty when all hold."""
    summary = evidence.summary
    if summary is None:
        return [Violation(FINAL_STATUS, evidence.batch_id, "the ledger has no such batch")]
    return [
        *_final_status(evidence.batch_id, summary),
        *_pngs_and_records(evidence),
        *_paid_is_charged(evidence, summary),
        *_charged_adds_up(evidence, summary),
        *_no_hold_left(evidence, summary),
        *_within_cap(evidence.batch_id, summary),
        *_endpoint_seconds_once(evidence, summary),
        *_redrive_is_failed(evidence),
    ]


def _final_status(batch_id: str, summary: BatchRecord) -> Iterator[Violation]:
    if summary.status not in FINAL_STATUSES:
        yield Violation(FINAL_STATUS, batch_id, f"status is {summary.status}, not final")


def _image_name(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".png")


def _pngs_and_records(evidence: BatchEvidence) -> Iterator[Violation]:
    """Each PNG has exactly one SUCCEEDED record (by its key, else by its image id) and each
    SUCCEEDED record its PNG."""
    succeeded = [r for r in evidence.images if r.get("status") == "SUCCEEDED"]
    by_id = Counter(str(r["image_id"]) for r in evidence.images)
    for image_id, count in sorted(by_id.items()):
        if count > 1:
            yield Violation(PNG_HAS_RECORD, image_id, f"{count} records for one image")
    recorded_keys = {str(r.get("output_key")) for r in succeeded if r.get("output_key")}
    recorded_ids = {str(r["image_id"]) for r in succeeded}
    pngs = [k for k in evidence.output_keys if k.endswith(".png")]
    for key in sorted(pngs):
        if key not in recorded_keys and _image_name(key) not in recorded_ids:
            yield Violation(PNG_HAS_RECORD, key, "a stored PNG with no SUCCEEDED record")
    stored = set(pngs)
    stored_names = {_image_name(k) for k in pngs}
    for record in sorted(succeeded, key=lambda r: str(r["image_id"])):
        wanted = record.get("output_key")
        if (wanted and wanted not in stored) or (
            not wanted and record["image_id"] not in stored_names
        ):
            yield Violation(
                RECORD_HAS_PNG, str(record["image_id"]), f"SUCCEEDED but no PNG at {wanted}"
            )


def _paid_is_charged(evidence: BatchEvidence, summary: BatchRecord) -> Iterator[Violation]:
    """The images Bedrock billed = the Bedrock images the ledger charged as made (reused
    copies were not bought); more made than charged is allowed only as labelled rework."""
    if evidence.paid_images is None:
        return
    charged = sum(
        1
        for r in evidence.images
        if r.get("status") == "SUCCEEDED"
        and not r.get("reused_from_batch_id")
        and r.get("backend", "bedrock") == "bedrock"
    )
    paid = evidence.paid_images
    if paid == charged or (paid > charged and summary.rework_micro_usd > 0):
        return
    yield Violation(
        PAID_IS_CHARGED,
        evidence.batch_id,
        f"Bedrock made {paid} image(s), the ledger charges {charged} "
        f"(rework {summary.rework_micro_usd} µ$)",
    )


def _charged_adds_up(evidence: BatchEvidence, summary: BatchRecord) -> Iterator[Violation]:
    """cost = Σ image charges; charged = inference (images + rework) + overhead, with the
    overhead never negative; the day rollups hold every charge, to the µ$."""
    batch_id = evidence.batch_id
    images = sum(int(r.get("cost_micro_usd") or 0) for r in evidence.images)
    if images != summary.cost_micro_usd:
        yield Violation(
            CHARGED_ADDS_UP,
            batch_id,
            f"image records sum to {images} µ$, the summary's inference {summary.cost_micro_usd}",
        )
    inference = summary.cost_micro_usd + summary.rework_micro_usd
    if summary.spent_micro_usd < inference:
        yield Violation(
            CHARGED_ADDS_UP,
            batch_id,
            f"charged {summary.spent_micro_usd} µ$ is less than its inference {inference}",
        )
    if summary.status == BatchStatus.REJECTED and not evidence.rollups:
        return
    rolled = sum(int(r.get(SPENT) or 0) for r in evidence.rollups)
    if rolled != summary.spent_micro_usd:
        yield Violation(
            CHARGED_ADDS_UP,
            batch_id,
            f"day rollups add to {rolled} µ$, the summary charged {summary.spent_micro_usd}",
        )
    rolled_inference = sum(int(r.get("inference_micro_usd") or 0) for r in evidence.rollups)
    if evidence.rollups and rolled_inference != inference:
        yield Violation(
            CHARGED_ADDS_UP,
            batch_id,
            f"day rollups' inference {rolled_inference} µ$ is not images + rework {inference}",
        )


def _no_hold_left(evidence: BatchEvidence, summary: BatchRecord) -> Iterator[Violation]:
    for hold in sorted(evidence.holds):
        yield Violation(NO_HOLD_LEFT, hold, "a budget hold outlived its batch")
    # A batch that woke the endpoint holds the wake (cold start and idle tail) until the
    # endpoint observer charges the first window that served it, after scale-in (a served
    # batch with no share is charged nothing and its wake settled all the same). One the
    # endpoint never served has its wake released by finalize: no window will charge it.
    waiting = (
        summary.wake_held_micro_usd if summary.endpoint_requests and not evidence.overhead else 0
    )
    if summary.reserved_micro_usd - waiting:
        yield Violation(
            NO_HOLD_LEFT,
            evidence.batch_id,
            f"the summary still reserves {summary.reserved_micro_usd} µ$"
            + (f" ({waiting} of it the endpoint's wake)" if waiting else ""),
        )


def _within_cap(batch_id: str, summary: BatchRecord) -> Iterator[Violation]:
    cap = summary.max_cost_micro_usd
    if cap is not None and summary.spent_micro_usd > cap:
        yield Violation(
            WITHIN_CAP, batch_id, f"charged {summary.spent_micro_usd} µ$ over its cap {cap}"
        )


def _window_lines(window: Mapping[str, Any]) -> list[dict[str, Any]]:
    lines = window.get("lines") or "[]"
    parsed: list[dict[str, Any]] = json.loads(lines) if isinstance(lines, str) else list(lines)
    return parsed


def _endpoint_seconds_once(evidence: BatchEvidence, summary: BatchRecord) -> Iterator[Violation]:
    """Each window's billed time is inference + its lines, exactly; windows never overlap;
    the batch's overhead records are its lines in the windows, once each, and its charge."""
    windows = sorted(evidence.windows, key=lambda w: str(w["start"]))
    for earlier, later in pairwise(windows):
        if str(later["start"]) < str(earlier["end"]):
            yield Violation(
                ENDPOINT_SECONDS_ONCE,
                f"window {later['start']}",
                f"overlaps the window ending {earlier['end']}",
            )
    mine_in_windows = 0
    for window in windows:
        lines = _window_lines(window)
        attributed = int(window.get("inference_micro_usd") or 0)
        attributed += sum(int(line["micro_usd"]) for line in lines)
        if attributed != int(window.get("billed_micro_usd") or 0):
            yield Violation(
                ENDPOINT_SECONDS_ONCE,
                f"window {window['start']}",
                f"billed {window.get('billed_micro_usd')} µ$, attributed {attributed}",
            )
        mine_in_windows += sum(
            int(line["micro_usd"]) for line in lines if line["charged_to"] == evidence.batch_id
        )
    charged = sum(int(r.get("overhead_micro_usd") or 0) for r in evidence.overhead)
    if charged != summary.endpoint_overhead_micro_usd:
        yield Violation(
            ENDPOINT_SECONDS_ONCE,
            evidence.batch_id,
            f"overhead records sum to {charged} µ$, the summary's endpoint overhead "
            f"{summary.endpoint_overhead_micro_usd}",
        )
    if windows and charged != mine_in_windows:
        yield Violation(
            ENDPOINT_SECONDS_ONCE,
            evidence.batch_id,
            f"windows attribute {mine_in_windows} µ$ to the batch, its records {charged}",
        )


def _redrive_is_failed(evidence: BatchEvidence) -> Iterator[Violation]:
    failed = {str(r["image_id"]) for r in evidence.images if r.get("status") == "FAILED"}
    listed = list(evidence.redrive_ids or [])
    for image_id, count in sorted(Counter(listed).items()):
        if count > 1:
            yield Violation(REDRIVE_IS_FAILED, image_id, f"listed {count} times in redrive.jsonl")
    if failed and evidence.redrive_ids is None:
        yield Violation(
            REDRIVE_IS_FAILED, evidence.batch_id, f"{len(failed)} failed image(s), no redrive.jsonl"
        )
        return
    for image_id in sorted(failed - set(listed)):
        yield Violation(REDRIVE_IS_FAILED, image_id, "FAILED but not in redrive.jsonl")
    for image_id in sorted(set(listed) - failed):
        yield Violation(REDRIVE_IS_FAILED, image_id, "in redrive.jsonl but not FAILED")


def redrive_ids(lines: Sequence[str] | None) -> list[str] | None:
    """The item ids of a redrive.jsonl (its header line skipped); None: no such file."""
    if lines is None:
        return None
    ids: list[str] = []
    for line in lines:
        if line.strip():
            item = json.loads(line)
            if "batch" not in item:
                ids.append(str(item.get("id")))
    return ids


def evidence_from_partition(
    batch_id: str,
    summary: BatchRecord | None,
    partition: Sequence[Mapping[str, Any]],
    **rest: Any,
) -> BatchEvidence:
    """Evidence from the batch's ledger partition (every item but the summary, as the live
    ledger and a local run's ledger.jsonl both hold it); `rest` are BatchEvidence's others."""

    def of(prefix: str) -> list[Mapping[str, Any]]:
        return [r for r in partition if str(r.get("sk", "")).startswith(prefix)]

    return BatchEvidence(
        batch_id=batch_id,
        summary=summary,
        images=of("IMAGE#"),
        holds=[str(r["sk"]) for r in of("RESERVATION#")],
        rollups=of("DAY#"),
        overhead=of("OVERHEAD#"),
        **rest,
    )
