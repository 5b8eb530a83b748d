"""The contact sheet's own cost is charged to its batch, within the batch's cap."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image
from support.ledger_summary import as_item

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock, Usage
from imagebatch.errors import ContactSheetOutOfBudgetError, ContactSheetUnfinished
from imagebatch.models.records import ChunkFile, ImageJob, ImageOutcome
from imagebatch.pipeline import contact_sheet
from imagebatch.pipeline.contact_sheet import ContactSheetEvent
from imagebatch.pipeline.contact_sheet_cost import HOLD_ID, build_and_charge

PRICES = load_aws_prices().region("us-east-1")
IMAGES = 6


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 0, 200)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def batch(s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str) -> Any:
    """A settled batch of 6 made images: its chunk file, PNGs and image records."""
    store = BatchStore(s3_client, s3_bucket)
    ledger = Ledger(dynamodb_client, ledger_table)
    jobs = [
        ImageJob(
            image_id=f"mug-{i}",
            item_id="mug",
            index=i,
            line=2,
            prompt="a mug",
            width=64,
            height=64,
            seed=i,
            model="m",
        )
        for i in range(1, IMAGES + 1)
    ]
    ref = store.put_chunk(
        ChunkFile(
            batch_id="b", chunk_id="00000", backend="bedrock", output_prefix="o/", images=jobs
        )
    )
    store.put_chunk_index("b", [ref])
    outcomes = []
    for job in jobs:
        key = f"o/b/{job.image_id}.png"
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=_png())
        outcomes.append(
            ImageOutcome(
                image_id=job.image_id,
                item_id="mug",
                chunk_id="00000",
                status="SUCCEEDED",
                model="m",
                backend="bedrock",
                seed=job.seed,
                prompt_sha256=job.prompt_sha256,
                cost_micro_usd=1000,
                output_key=key,
            )
        )
    return store, ledger, outcomes


def _create(ledger: Ledger, outcomes: list[ImageOutcome], **fields: Any) -> None:
    ledger.create_batch(
        "b",
        {
            "status": "SUCCEEDED",
            "images_total": IMAGES,
            "chunks_total": 1,
            "models": ["m"],
            "tags": {"team": "shop"},
            **fields,
        },
    )
    ledger.commit_images("b", outcomes, capped="max_cost_micro_usd" in fields)


def _fresh(store: BatchStore, ledger: Ledger) -> dict[str, Any]:
    return {
        "store": BatchStore(store._s3, store.bucket),
        "ledger": Ledger(ledger.client, ledger.table),
        "prices": PRICES,
        "clock": LambdaClock(1024),
        "remaining_s": lambda: 900.0,
    }


def _invariant(ledger: Ledger) -> dict[str, Any]:
    summary = as_item(ledger.get_batch("b"))
    assert summary is not None
    assert (
        summary["spent_micro_usd"]
        + summary["reserved_micro_usd"]
        + summary["budget_left_micro_usd"]
        + summary["overhead_reserve_micro_usd"]
        == summary["max_cost_micro_usd"]
    )
    return summary


def test_the_sheet_is_charged_to_its_batch_and_its_day(batch: Any) -> None:
    store, ledger, outcomes = batch
    _create(ledger, outcomes)
    before = ledger.get_batch("b")
    assert before is not None
    # WHEN the contact sheet is built
    charge = build_and_charge(
        ContactSheetEvent(batch_id="b", bucket=store.bucket), **_fresh(store, ledger)
    )
    # THEN its Lambda, one GET per image, the chunk files, its PUTs and bytes are on the batch
    after = ledger.get_batch("b")
    assert after is not None
    assert charge.result is not None
    # field by field: a Usage of negative counts is refused (internal records are ge=0)
    was, now = Usage.from_summary(before).model_dump(), Usage.from_summary(after).model_dump()
    added = SimpleNamespace(**{k: now[k] - was[k] for k in now})
    assert added.lambda_requests == 1
    assert added.lambda_mb_ms >= 1024
    # images, and their chunk file (found from each record's chunk id: no chunk index read)
    assert added.s3_get_requests == IMAGES + 1
    assert added.s3_put_requests == 2  # contact-sheet.png, index.html
    assert added.s3_bytes_written > 0
    assert after.spent_micro_usd - before.spent_micro_usd == charge.charged_micro_usd > 0
    # AND the day's rollup carries it, so costs over a range still sum to the spend
    rollups = list(ledger.query_batch("b", "DAY#"))
    assert sum(r["spent_micro_usd"] for r in rollups) == after.spent_micro_usd
    assert rollups[0]["tags"] == {"team": "shop"}


def test_a_capped_batch_pays_for_its_sheet_from_what_it_has_left(batch: Any) -> None:
    store, ledger, outcomes = batch
    # GIVEN a settled capped batch whose budget left is gone but whose reserve is not
    _create(
        ledger,
        outcomes,
        max_cost_micro_usd=8_000,
        overhead_reserve_micro_usd=2_000,
        spent_micro_usd=6_000 - 6 * 1000,
    )
    summary = _invariant(ledger)
    assert summary["budget_left_micro_usd"] == 0
    # WHEN the sheet is built
    charge = build_and_charge(
        ContactSheetEvent(batch_id="b", bucket=store.bucket), **_fresh(store, ledger)
    )
    # THEN it held from the reserve, settled, and the cap holds
    assert charge.result is not None
    assert charge.held_micro_usd is not None
    after = _invariant(ledger)
    assert after["reserved_micro_usd"] == 0
    assert after["spent_micro_usd"] <= 8_000
    assert list(ledger.query_batch("b", "RESERVATION#")) == []


def test_with_nothing_left_the_sheet_is_skipped_and_nothing_spent(batch: Any) -> None:
    store, ledger, outcomes = batch
    _create(ledger, outcomes, max_cost_micro_usd=6_000, overhead_reserve_micro_usd=0)
    before = _invariant(ledger)
    charge = build_and_charge(
        ContactSheetEvent(batch_id="b", bucket=store.bucket), **_fresh(store, ledger)
    )
    assert charge.skipped is not None
    assert charge.result is None
    assert _invariant(ledger)["spent_micro_usd"] == before["spent_micro_usd"]


class _SlowClock(LambdaClock):
    """Each look at the clock is ten seconds later."""

    def __init__(self) -> None:
        super().__init__(1024)
        self.now = 0.0

    def elapsed_s(self) -> float:
        self.now += 10
        return self.now


def test_a_sheet_that_runs_past_its_hold_stops_and_is_charged_within_the_cap(batch: Any) -> None:
    store, ledger, outcomes = batch
    _create(ledger, outcomes, max_cost_micro_usd=1_000_000, overhead_reserve_micro_usd=2_000)
    adapters = _fresh(store, ledger) | {"clock": _SlowClock()}
    # WHEN the sheet's clock says it has used its held time before the first thumbnail
    with pytest.raises(ContactSheetOutOfBudgetError):
        build_and_charge(ContactSheetEvent(batch_id="b", bucket=store.bucket), **adapters)
    # THEN the hold is settled at what it used (its Catch state included), none left held
    after = _invariant(ledger)
    assert after["reserved_micro_usd"] == 0
    assert after["use_sfn_transitions"] == 1
    assert not list(ledger.query_batch("b", f"RESERVATION#{HOLD_ID}"))


def test_a_sheet_that_outlasts_an_invocation_goes_on_in_the_retry(
    batch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a capped batch whose sheet is three pages (two images a page), and invocations
    # with under a minute left after each page (Lambda would stop them at their timeout)
    store, ledger, outcomes = batch
    monkeypatch.setattr(contact_sheet, "PER_SHEET", 2)
    _create(ledger, outcomes, max_cost_micro_usd=1_000_000, overhead_reserve_micro_usd=2_000)
    # the same event each time, as Step Functions retries the task with its input
    event = ContactSheetEvent(batch_id="b", bucket=store.bucket, execution="arn:exec:1")
    unfinished = 0
    charged = []
    for _ in range(5):
        adapters = _fresh(store, ledger) | {"remaining_s": lambda: 30.0}
        try:
            charge = build_and_charge(event, **adapters)
        except ContactSheetUnfinished:
            unfinished += 1
            # each invocation settled its own hold, and the cap's invariant holds between them
            assert _invariant(ledger)["reserved_micro_usd"] == 0
            continue
        assert charge.result is not None and charge.result.next is None
        charged.append(charge.charged_micro_usd)
        break
    # THEN two invocations ran out of time and the third finished, one page each
    assert unfinished == 2 and len(charged) == 1
    keys = sorted(o["Key"] for o in store._s3.list_objects_v2(Bucket=store.bucket)["Contents"])
    assert [k for k in keys if k.startswith("reports/b/contact-sheet")] == [
        "reports/b/contact-sheet-2.png",
        "reports/b/contact-sheet-3.png",
        "reports/b/contact-sheet.png",
    ]
    # AND every image is on exactly one page
    shown = []
    for name in ("index.html", "index-2.html", "index-3.html"):
        page = store.get_bytes(f"reports/b/{name}").decode()
        shown += [o.image_id for o in outcomes if f"id='{o.image_id}'" in page]
    assert sorted(shown) == sorted(o.image_id for o in outcomes)
    # AND the two retries' transitions are charged, and every hold is gone
    after = _invariant(ledger)
    assert after["use_sfn_transitions"] == 2
    assert list(ledger.query_batch("b", "RESERVATION#")) == []


def test_another_execution_starts_its_sheet_from_the_first_page(
    batch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ledger, outcomes = batch
    monkeypatch.setattr(contact_sheet, "PER_SHEET", 2)
    _create(ledger, outcomes)
    first = ContactSheetEvent(batch_id="b", bucket=store.bucket, execution="arn:exec:1")
    with pytest.raises(ContactSheetUnfinished):
        build_and_charge(first, **(_fresh(store, ledger) | {"remaining_s": lambda: 30.0}))
    # WHEN a restarted execution builds the sheet with time to spare
    again = ContactSheetEvent(batch_id="b", bucket=store.bucket, execution="arn:exec:2")
    charge = build_and_charge(again, **_fresh(store, ledger))
    # THEN it showed every image itself, from page 1
    assert charge.result is not None and charge.result.images == IMAGES
    assert charge.result.sheet_keys[0] == "reports/b/contact-sheet.png"
