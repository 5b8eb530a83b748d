"""The invariant checker's pure core: a clean batch passes, and each case breaks exactly one
invariant, named on its line with the item."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from imagebatch.costs import invariants as inv
from imagebatch.costs.invariants import BatchEvidence, check_batch
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus

BATCH = "b-1"
PREFIX = f"outputs/{BATCH}/"


def _image(
    image_id: str, status: str = "SUCCEEDED", cost: int = 80_000, **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "image_id": image_id,
        "status": status,
        "cost_micro_usd": cost if status == "SUCCEEDED" else 0,
    }
    if status == "SUCCEEDED":
        record["output_key"] = f"{PREFIX}{image_id}.png"
    return record | extra


def _clean() -> BatchEvidence:
    """Two made images and one failed: charged 160,000 µ$ of inference + 30 of overhead, an
    endpoint window attributing 50 µ$ of idle to the batch."""
    images = [_image("a-1"), _image("a-2"), _image("a-3", "FAILED")]
    window = {
        "start": "2026-12-07T10:00:00+00:00",
        "end": "2026-12-07T10:05:00+00:00",
        "billed_micro_usd": 1_000,
        "inference_micro_usd": 900,
        "lines": json.dumps(
            [
                {"charged_to": BATCH, "kind": "idle", "micro_usd": 50},
                {"charged_to": "(unattributed idle)", "kind": "idle", "micro_usd": 50},
            ]
        ),
    }
    summary = BatchRecord(
        batch_id=BATCH,
        status=BatchStatus.PARTIAL,
        cost_micro_usd=160_000,
        spent_micro_usd=160_080,
        endpoint_overhead_micro_usd=50,
        max_cost_micro_usd=200_000,
    )
    return BatchEvidence(
        batch_id=BATCH,
        summary=summary,
        images=images,
        output_keys=[f"{PREFIX}a-1.png", f"{PREFIX}a-2.png"],
        redrive_ids=["a-3"],
        rollups=[
            {"spent_micro_usd": 160_030, "inference_micro_usd": 160_000},
            {"spent_micro_usd": 50},
        ],
        overhead=[{"overhead_micro_usd": 50}],
        windows=[window],
        paid_images=2,
    )


def _names(evidence: BatchEvidence) -> list[str]:
    return [v.invariant for v in check_batch(evidence)]


def _summary(evidence: BatchEvidence, **changes: Any) -> BatchEvidence:
    assert evidence.summary is not None
    return replace(evidence, summary=evidence.summary.model_copy(update=changes))


def test_a_clean_batch_breaks_nothing() -> None:
    assert check_batch(_clean()) == []


def test_a_batch_still_running_or_missing_is_not_final() -> None:
    running = _summary(_clean(), status=BatchStatus.RUNNING)
    assert _names(running) == [inv.FINAL_STATUS]
    missing = check_batch(replace(_clean(), summary=None))
    assert [v.line() for v in missing] == ["final-status: b-1: the ledger has no such batch"]


def test_a_png_without_a_record_is_named() -> None:
    evidence = replace(_clean(), output_keys=[*_clean().output_keys, f"{PREFIX}a-3.png"])
    (violation,) = check_batch(evidence)
    assert violation.line() == (
        f"png-has-one-record: {PREFIX}a-3.png: a stored PNG with no SUCCEEDED record"
    )


def test_two_records_of_one_image_are_named() -> None:
    evidence = _clean()
    doubled = replace(evidence, images=[*evidence.images, _image("a-1", cost=0)])
    assert inv.PNG_HAS_RECORD in _names(doubled)


def test_a_record_without_its_png_is_named() -> None:
    evidence = replace(_clean(), output_keys=[f"{PREFIX}a-1.png"])
    (violation,) = check_batch(evidence)
    assert (violation.invariant, violation.item) == (inv.RECORD_HAS_PNG, "a-2")


def test_an_image_paid_twice_and_charged_once_is_named() -> None:
    assert _names(replace(_clean(), paid_images=3)) == [inv.PAID_IS_CHARGED]
    # labelled as rework it is accounted for
    reworked = _summary(replace(_clean(), paid_images=3), rework_micro_usd=10)
    assert inv.PAID_IS_CHARGED not in _names(reworked)
    # a deployed stack cannot count its backend's images: not checked
    assert check_batch(replace(_clean(), paid_images=None)) == []


def test_charges_that_do_not_add_up_are_named() -> None:
    # the image records and the summary's inference disagree
    assert _names(_summary(_clean(), cost_micro_usd=159_999)) == [
        inv.CHARGED_ADDS_UP,
        inv.CHARGED_ADDS_UP,
    ]
    # the rollups miss a charge the summary made
    assert _names(_summary(_clean(), spent_micro_usd=160_081)) == [inv.CHARGED_ADDS_UP]
    # charged less than the inference it recorded
    evidence = replace(_clean(), rollups=[{"spent_micro_usd": 1, "inference_micro_usd": 160_000}])
    assert _names(_summary(evidence, spent_micro_usd=1)) == [inv.CHARGED_ADDS_UP]


def test_a_hold_left_is_named() -> None:
    evidence = replace(_clean(), holds=["RESERVATION#c-0001"])
    assert [v.line() for v in check_batch(evidence)] == [
        "no-hold-left: RESERVATION#c-0001: a budget hold outlived its batch"
    ]
    assert _names(_summary(_clean(), reserved_micro_usd=5)) == [inv.NO_HOLD_LEFT]


def test_the_endpoint_wake_is_held_until_a_window_charges_the_batch() -> None:
    waiting = replace(_clean(), overhead=[])
    # the endpoint served the batch and no window has charged it yet: its wake is held for
    # the observer, not left over
    held = _summary(
        waiting,
        reserved_micro_usd=264_000,
        wake_held_micro_usd=264_000,
        endpoint_overhead_micro_usd=0,
        endpoint_requests=1,
    )
    assert inv.NO_HOLD_LEFT not in _names(held)
    # more reserved than the wake: the rest is a hold left over
    more = _summary(
        waiting,
        reserved_micro_usd=264_005,
        wake_held_micro_usd=264_000,
        endpoint_overhead_micro_usd=0,
        endpoint_requests=1,
    )
    assert inv.NO_HOLD_LEFT in _names(more)
    # a window charged the batch and its wake is still held: the observer left it
    charged = _summary(_clean(), reserved_micro_usd=264_000, wake_held_micro_usd=264_000)
    assert inv.NO_HOLD_LEFT in _names(charged)


def test_a_wake_held_by_a_batch_the_endpoint_never_served_is_a_hold_left() -> None:
    # a finalized batch that sent no request to the endpoint (all reused, or all on Bedrock):
    # no window will ever charge it, so finalize must have released its wake
    never_served = _summary(
        replace(_clean(), overhead=[]),
        reserved_micro_usd=264_000,
        wake_held_micro_usd=264_000,
        endpoint_overhead_micro_usd=0,
        endpoint_requests=0,
    )
    assert inv.NO_HOLD_LEFT in _names(never_served)


def test_spending_over_the_cap_is_named() -> None:
    assert _names(_summary(_clean(), max_cost_micro_usd=160_000)) == [inv.WITHIN_CAP]
    assert check_batch(_summary(_clean(), max_cost_micro_usd=None)) == []


@pytest.mark.parametrize(
    "change",
    [
        # a window whose lines do not add up to its billed time
        {"billed_micro_usd": 999},
        # the window attributes more to the batch than its records charged
        {
            "lines": json.dumps(
                [
                    {"charged_to": BATCH, "kind": "idle", "micro_usd": 100},
                ]
            )
        },
    ],
)
def test_endpoint_time_attributed_other_than_once_is_named(change: dict[str, Any]) -> None:
    evidence = _clean()
    window = dict(evidence.windows[0]) | change
    assert _names(replace(evidence, windows=[window])) == [inv.ENDPOINT_SECONDS_ONCE]


def test_overlapping_windows_and_a_doubled_overhead_record_are_named() -> None:
    evidence = _clean()
    second = dict(evidence.windows[0]) | {
        "start": "2026-12-07T10:04:00+00:00",
        "lines": "[]",
        "inference_micro_usd": 1_000,
    }
    assert _names(replace(evidence, windows=[*evidence.windows, second])) == [
        inv.ENDPOINT_SECONDS_ONCE
    ]
    doubled = replace(evidence, overhead=[*evidence.overhead, {"overhead_micro_usd": 50}])
    assert _names(doubled) == [inv.ENDPOINT_SECONDS_ONCE, inv.ENDPOINT_SECONDS_ONCE]


def test_a_redrive_that_is_not_exactly_the_failed_images_is_named() -> None:
    missing = replace(_clean(), redrive_ids=[])
    assert [v.line() for v in check_batch(missing)] == [
        "redrive-is-failed: a-3: FAILED but not in redrive.jsonl"
    ]
    extra = replace(_clean(), redrive_ids=["a-3", "a-1"])
    assert [v.line() for v in check_batch(extra)] == [
        "redrive-is-failed: a-1: in redrive.jsonl but not FAILED"
    ]
    twice = replace(_clean(), redrive_ids=["a-3", "a-3"])
    assert _names(twice) == [inv.REDRIVE_IS_FAILED]
    absent = replace(_clean(), redrive_ids=None)
    assert _names(absent) == [inv.REDRIVE_IS_FAILED]
