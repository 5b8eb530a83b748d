"""The cost ledger on a moto DynamoDB table built from template.yaml's LedgerTable."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ledger_summary import as_item

from imagebatch.aws.dynamo_items import batch_pk, from_item
from imagebatch.aws.ledger import MAX_IMAGES_PER_COMMIT, Ledger
from imagebatch.errors import ImagesAlreadyRecordedError
from imagebatch.models.records import BatchStatus, FailureClass, ImageOutcome

BATCH = "cats-0123456789abcdef"
MODEL = "stability.sd3-5-large-v1:0"


def outcome(
    image_id: str, *, cost: int = 80_000, ok: bool = True, chunk_id: str = "00000"
) -> ImageOutcome:
    return ImageOutcome(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        chunk_id=chunk_id,
        status="SUCCEEDED" if ok else "FAILED",
        model=MODEL,
        backend="bedrock",
        seed=42,
        prompt_sha256="0" * 64,
        cost_micro_usd=cost if ok else 0,
        output_key=f"outputs/{BATCH}/{image_id}.png" if ok else None,
        failure_class=None if ok else FailureClass.CONTENT_FILTERED,
        failure_reason=None if ok else "Filter reason: prompt",
    )


def image_ids(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}-{i}" for i in range(1, n + 1)]


def raw_items(ledger: Ledger, client: Any, batch_id: str) -> list[dict[str, Any]]:
    """Every item of the batch partition, untouched by from_item."""
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("query").paginate(
        TableName=ledger.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": batch_pk(batch_id)}},
        ConsistentRead=True,
    ):
        items.extend(page["Items"])
    return items


def assert_no_float(value: Any, path: str = "$") -> None:
    assert not isinstance(value, float | Decimal), f"{path} is {type(value).__name__}: {value!r}"
    if isinstance(value, dict):
        for key, inner in value.items():
            assert_no_float(inner, f"{path}.{key}")
    elif isinstance(value, list | set | tuple):
        for i, inner in enumerate(value):
            assert_no_float(inner, f"{path}[{i}]")


@pytest.fixture
def ledger(dynamodb_client: Any, ledger_table: str) -> Ledger:
    return Ledger(dynamodb_client, ledger_table)


@pytest.fixture
def batch(ledger: Ledger) -> str:
    assert ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 300})
    return BATCH


# --- create_batch -------------------------------------------------------------------------


def test_create_batch_writes_summary_with_zero_counters(ledger: Ledger) -> None:
    # GIVEN an empty ledger
    # WHEN a batch is created
    created = ledger.create_batch(
        BATCH,
        {"status": "RUNNING", "images_total": 7, "created_at": "2026-11-20T10:00:00.000+00:00"},
    )

    # THEN the summary carries the attributes, the list index keys and zeroed counters
    assert created is True
    assert as_item(ledger.get_batch(BATCH)) == {
        "pk": f"BATCH#{BATCH}",
        "sk": "SUMMARY",
        "batch_id": BATCH,
        "status": "RUNNING",
        "images_total": 7,
        "created_at": "2026-11-20T10:00:00.000+00:00",
        "gsi1pk": "BATCHES",
        "gsi1sk": f"2026-11-20T10:00:00.000+00:00#{BATCH}",
        "images_succeeded": 0,
        "images_failed": 0,
        "cost_micro_usd": 0,
        "spent_micro_usd": 0,
        "reserved_micro_usd": 0,
        "chunk_commits": 0,
    }


def test_create_batch_is_conditional(ledger: Ledger) -> None:
    # GIVEN a batch that exists
    assert ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 3})
    first = as_item(ledger.get_batch(BATCH))

    # WHEN it is created again with other attributes
    again = ledger.create_batch(BATCH, {"status": "REJECTED", "images_total": 99})

    # THEN the second call says so and the record is unchanged
    assert again is False
    assert as_item(ledger.get_batch(BATCH)) == first


def test_get_batch_of_unknown_batch_is_none(ledger: Ledger) -> None:
    # GIVEN an empty ledger / WHEN a batch is read / THEN there is none
    assert as_item(ledger.get_batch("nope-0000000000000000")) is None


# --- commit_images ------------------------------------------------------------------------


def test_commit_writes_one_record_per_image_and_adds_totals(ledger: Ledger, batch: str) -> None:
    # GIVEN three succeeded images of different prices and two failed ones
    outcomes = [
        outcome("a-1", cost=80_000),
        outcome("a-2", cost=40_001),
        outcome("b-1", cost=7),
        outcome("b-2", ok=False),
        outcome("c-1", ok=False),
    ]

    # WHEN they are committed
    ledger.commit_images(batch, outcomes)

    # THEN there is one record per image, and the summary totals are their exact sum
    records = {r["image_id"]: r for r in ledger.image_records(batch)}
    assert sorted(records) == ["a-1", "a-2", "b-1", "b-2", "c-1"]
    assert records["a-2"]["cost_micro_usd"] == 40_001
    assert records["b-2"]["status"] == "FAILED"
    assert records["b-2"]["failure_class"] == "content_filtered"
    assert records["b-2"]["cost_micro_usd"] == 0
    summary = as_item(ledger.get_batch(batch))
    assert summary is not None
    assert summary["cost_micro_usd"] == 120_008
    assert summary["cost_micro_usd"] == sum(r["cost_micro_usd"] for r in records.values())
    assert summary["images_succeeded"] == 3
    assert summary["images_failed"] == 2
    assert summary["chunk_commits"] == 1


def test_committing_same_images_twice_raises_and_changes_nothing(
    ledger: Ledger, batch: str, dynamodb_client: Any
) -> None:
    # GIVEN a committed set of images
    ledger.commit_images(batch, [outcome("a-1"), outcome("a-2", ok=False)])
    summary_before = as_item(ledger.get_batch(batch))
    items_before = raw_items(ledger, dynamodb_client, batch)

    # WHEN the same image ids are committed again (a retried chunk)
    with pytest.raises(ImagesAlreadyRecordedError):
        ledger.commit_images(batch, [outcome("a-1", cost=1), outcome("a-2")])

    # THEN no record and no total changed
    assert as_item(ledger.get_batch(batch)) == summary_before
    assert raw_items(ledger, dynamodb_client, batch) == items_before


def test_commit_overlapping_one_recorded_image_writes_none_of_the_new_ones(
    ledger: Ledger, batch: str
) -> None:
    # GIVEN one recorded image
    ledger.commit_images(batch, [outcome("a-1", cost=80_000)])

    # WHEN a commit of two new images and that one is made
    with pytest.raises(ImagesAlreadyRecordedError):
        ledger.commit_images(batch, [outcome("a-2"), outcome("a-1"), outcome("a-3")])

    # THEN the whole transaction was cancelled: the new images are not there either
    assert ledger.recorded_image_ids(batch, ["a-1", "a-2", "a-3"]) == {"a-1"}
    summary = as_item(ledger.get_batch(batch))
    assert summary is not None
    assert (summary["images_succeeded"], summary["cost_micro_usd"]) == (1, 80_000)


def test_commit_of_a_full_transaction_sums_exactly(ledger: Ledger, batch: str) -> None:
    # GIVEN a full transaction's worth of images (with the summary and rollup updates) at
    # irregular prices
    ids = image_ids(MAX_IMAGES_PER_COMMIT)
    outcomes = [
        outcome(image_id, cost=(i * 7919) % 200_001, ok=i % 11 != 0)
        for i, image_id in enumerate(ids)
    ]

    # WHEN they are committed in one call
    ledger.commit_images(batch, outcomes)

    # THEN they went in as one transaction and the totals are exact
    summary = as_item(ledger.get_batch(batch))
    assert summary is not None
    records = list(ledger.image_records(batch))
    assert summary["chunk_commits"] == 1
    assert len(records) == MAX_IMAGES_PER_COMMIT
    assert summary["cost_micro_usd"] == sum(o.cost_micro_usd for o in outcomes)
    assert summary["cost_micro_usd"] == sum(r["cost_micro_usd"] for r in records)
    assert summary["images_failed"] == sum(1 for i in range(len(ids)) if i % 11 == 0)
    assert summary["images_succeeded"] == len(ids) - summary["images_failed"]


def test_a_commit_larger_than_one_transaction_is_refused_and_writes_nothing(
    ledger: Ledger, batch: str
) -> None:
    # GIVEN 100 images: one more than a transaction holds next to the summary update
    ids = image_ids(MAX_IMAGES_PER_COMMIT + 1)

    # WHEN they are committed in one call
    with pytest.raises(ValueError, match=f"at most {MAX_IMAGES_PER_COMMIT}"):
        ledger.commit_images(batch, [outcome(image_id) for image_id in ids])

    # THEN nothing was written: splitting would break the all-or-nothing promise
    assert ledger.recorded_image_ids(batch, ids) == set()
    summary = as_item(ledger.get_batch(batch))
    assert summary is not None
    assert summary["chunk_commits"] == 0


def test_commit_of_nothing_is_a_no_op(ledger: Ledger, batch: str) -> None:
    # GIVEN a fresh batch / WHEN an empty commit is made
    ledger.commit_images(batch, [])

    # THEN the summary did not move
    summary = as_item(ledger.get_batch(batch))
    assert summary is not None
    assert (summary["chunk_commits"], summary["cost_micro_usd"]) == (0, 0)


def test_commit_to_a_batch_without_summary_writes_no_images(ledger: Ledger) -> None:
    # GIVEN no summary record for the batch
    # WHEN images are committed to it
    with pytest.raises(ImagesAlreadyRecordedError):
        ledger.commit_images("ghost-0000000000000000", [outcome("a-1")])

    # THEN the condition on the summary cancelled the image records too
    assert ledger.recorded_image_ids("ghost-0000000000000000", ["a-1"]) == set()


# --- recorded_image_ids -------------------------------------------------------------------


def test_recorded_image_ids_finds_exactly_the_committed_ones_across_pages(
    ledger: Ledger, batch: str
) -> None:
    # GIVEN 132 committed images of 260 asked about (more than one BatchGetItem of 100)
    asked = image_ids(260)
    committed = set(asked[::2]) | {asked[1], asked[259]}
    to_commit = [outcome(i) for i in asked if i in committed]
    for start in range(0, len(to_commit), MAX_IMAGES_PER_COMMIT):
        ledger.commit_images(batch, to_commit[start : start + MAX_IMAGES_PER_COMMIT])

    # WHEN the ledger is asked which are recorded
    found = ledger.recorded_image_ids(batch, asked)

    # THEN exactly the committed ones come back
    assert len(committed) == 132
    assert found == committed


def test_recorded_image_ids_is_scoped_to_the_batch(ledger: Ledger, batch: str) -> None:
    # GIVEN the same image ids committed in another batch
    other = "dogs-fedcba9876543210"
    assert ledger.create_batch(other, {"status": "RUNNING", "images_total": 2})
    ledger.commit_images(other, [outcome("a-1"), outcome("a-2")])

    # WHEN this batch is asked / THEN none are recorded here
    assert ledger.recorded_image_ids(batch, ["a-1", "a-2"]) == set()
    assert ledger.recorded_image_ids(other, ["a-1", "a-2", "a-3"]) == {"a-1", "a-2"}


def test_recorded_image_ids_of_no_ids_is_empty(ledger: Ledger, batch: str) -> None:
    # GIVEN / WHEN nothing is asked / THEN nothing is found
    assert ledger.recorded_image_ids(batch, []) == set()


# --- settle_batch -------------------------------------------------------------------------


def test_settle_batch_sets_status_finished_at_and_extra_fields(ledger: Ledger, batch: str) -> None:
    # GIVEN a running batch with one commit
    ledger.commit_images(batch, [outcome("a-1"), outcome("a-2", ok=False)])

    # WHEN it is settled
    settled = as_item(
        ledger.settle_batch(
            batch,
            BatchStatus.PARTIAL,
            {"report_key": f"reports/{batch}/summary.json", "failures_by_class": {"throttled": 1}},
        )
    )

    # THEN the new fields are set, the counters kept, and the read-back matches
    assert settled["status"] == "PARTIAL"
    assert settled["report_key"] == f"reports/{batch}/summary.json"
    assert settled["failures_by_class"] == {"throttled": 1}
    assert type(settled["failures_by_class"]["throttled"]) is int
    finished = datetime.fromisoformat(settled["finished_at"])
    assert finished.utcoffset() is not None
    assert (settled["images_succeeded"], settled["images_failed"]) == (1, 1)
    assert as_item(ledger.get_batch(batch)) == settled


def test_settle_batch_of_unknown_batch_fails_without_creating_it(
    ledger: Ledger, dynamodb_client: Any
) -> None:
    # GIVEN no batch / WHEN it is settled / THEN the condition fails and nothing is created
    with pytest.raises(dynamodb_client.exceptions.ConditionalCheckFailedException):
        ledger.settle_batch("ghost-0000000000000000", BatchStatus.FAILED, {})
    assert as_item(ledger.get_batch("ghost-0000000000000000")) is None


# --- money is int ------------------------------------------------------------------------


def test_money_reads_back_as_int(ledger: Ledger, batch: str, dynamodb_client: Any) -> None:
    # GIVEN committed images with costs
    ledger.commit_images(batch, [outcome("a-1", cost=80_000), outcome("a-2", cost=1)])

    # WHEN every item of the batch is read through from_item
    records = [from_item(item) for item in raw_items(ledger, dynamodb_client, batch)]

    # THEN every counter and every cost is an int, never Decimal or float (the summary, two
    # images and the day's cost rollup)
    assert len(records) == 4
    for record in records:
        assert type(record.get("cost_micro_usd", record.get("inference_micro_usd"))) is int
        assert_no_float(record)
    summary = next(r for r in records if r["sk"] == "SUMMARY")
    for name in ("images_total", "images_succeeded", "images_failed", "chunk_commits"):
        assert type(summary[name]) is int
    assert summary["cost_micro_usd"] == 80_001


# --- property: totals are exact whatever the outcomes and commit boundaries ---------------

_examples = itertools.count()


@st.composite
def commits(draw: st.DrawFn) -> list[list[ImageOutcome]]:
    n = draw(st.integers(min_value=0, max_value=2 * MAX_IMAGES_PER_COMMIT))
    costs = draw(st.lists(st.integers(0, 200_000), min_size=n, max_size=n))
    oks = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=4))) if n > 1 else []
    # A commit is at most one transaction: force a cut wherever a group would be larger.
    bounds = [0, *cuts, n]
    for a, b in itertools.pairwise(list(bounds)):
        cuts.extend(range(a + MAX_IMAGES_PER_COMMIT, b, MAX_IMAGES_PER_COMMIT))
    cuts = sorted(set(cuts))
    outcomes = [
        ImageOutcome(
            image_id=f"p-{i}",
            item_id="p",
            chunk_id="00000",
            status="SUCCEEDED" if ok else "FAILED",
            model=MODEL,
            backend="bedrock",
            seed=i,
            prompt_sha256="0" * 64,
            cost_micro_usd=cost if ok else 0,
            failure_class=None if ok else FailureClass.THROTTLED,
        )
        for i, (cost, ok) in enumerate(zip(costs, oks, strict=True))
    ]
    bounds = [0, *cuts, n]
    return [outcomes[a:b] for a, b in itertools.pairwise(bounds)]


def _flatten(groups: Iterable[Sequence[ImageOutcome]]) -> list[ImageOutcome]:
    return [o for group in groups for o in group]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(groups=commits())
def test_summary_total_equals_sum_of_records(
    dynamodb_client: Any, new_ledger_table: Callable[[str], str], groups: list[list[ImageOutcome]]
) -> None:
    # GIVEN a fresh table and batch per example (moto copies the whole table per
    # transaction, so a table shared by every example makes each one slower)
    example = next(_examples)
    ledger = Ledger(dynamodb_client, new_ledger_table(f"ledger-prop-{example}"))
    batch_id = f"prop-{example:016d}"
    assert ledger.create_batch(batch_id, {"status": "RUNNING", "images_total": 0})
    flat = _flatten(groups)

    # WHEN the outcomes are committed in the drawn groups
    for group in groups:
        ledger.commit_images(batch_id, group)

    # THEN the summary equals the records, exactly, and nothing is a float
    records = list(ledger.image_records(batch_id))
    summary = as_item(ledger.get_batch(batch_id))
    assert summary is not None
    assert len(records) == len(flat)
    assert summary["cost_micro_usd"] == sum(r["cost_micro_usd"] for r in records)
    assert summary["cost_micro_usd"] == sum(o.cost_micro_usd for o in flat)
    assert summary["images_succeeded"] == sum(1 for o in flat if o.status == "SUCCEEDED")
    assert summary["images_failed"] == sum(1 for o in flat if o.status == "FAILED")
    for item in raw_items(ledger, dynamodb_client, batch_id):
        assert_no_float(from_item(item))
    dynamodb_client.delete_table(TableName=ledger.table)
