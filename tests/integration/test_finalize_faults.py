"""Finalize run again, or with a failing hook (issue 18): a retry after a completed run
neither charges finalize again nor runs its hooks (Batch Finished) twice; a hook that fails
is logged and recorded on the batch, and the other hooks and the result still come."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from support.ledger_summary import as_item

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.records import ChunkFile, ImageJob, ImageOutcome
from imagebatch.pipeline.finalize import FinalizeEvent, finalize_batch

BATCH = "b-1"
MODEL = "stability.sd3-5-large-v1:0"


class _Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch_id: str, summary: Mapping[str, Any]) -> int:
        self.calls += 1
        return 1


class _Broken:
    def __call__(self, batch_id: str, summary: Mapping[str, Any]) -> int:
        raise KeyError("catalog 'spring' not found")


@pytest.fixture
def batch(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> tuple[BatchStore, Ledger]:
    """A batch of two images, both made and committed by their chunk."""
    store = BatchStore(s3_client, s3_bucket)
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 2})
    jobs = [
        ImageJob(
            image_id=f"i{k}-1",
            item_id=f"i{k}",
            index=1,
            line=k + 2,
            prompt="a mug",
            width=1024,
            height=1024,
            seed=k,
            model=MODEL,
        )
        for k in range(2)
    ]
    ref = store.put_chunk(
        ChunkFile(
            batch_id=BATCH,
            chunk_id="00000",
            backend="bedrock",
            output_prefix="outputs/",
            images=jobs,
        )
    )
    store.put_chunk_index(BATCH, [ref])
    ledger.commit_images(
        BATCH,
        [
            ImageOutcome(
                image_id=job.image_id,
                item_id=job.item_id,
                chunk_id="00000",
                status="SUCCEEDED",
                model=MODEL,
                backend="bedrock",
                seed=job.seed,
                prompt_sha256="0" * 64,
                cost_micro_usd=40_000,
                output_key=f"outputs/{BATCH}/{job.image_id}.png",
            )
            for job in jobs
        ],
    )
    return store, ledger


def _finalize(store: BatchStore, ledger: Ledger, hooks: list[Any]) -> Any:
    return finalize_batch(
        FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
        store=store,
        ledger=ledger,
        prices=load_aws_prices().region("us-east-1"),
        clock=LambdaClock(512),
        hooks=hooks,
    )


def test_finalize_run_again_charges_nothing_and_runs_no_hook_again(
    batch: tuple[BatchStore, Ledger],
) -> None:
    store, ledger = batch
    hook = _Counting()
    # GIVEN a batch finalize has settled
    first = _finalize(store, ledger, [hook])
    settled = as_item(ledger.get_batch(BATCH)) or {}
    # WHEN Step Functions runs finalize again (its reply was lost, Sandbox.Timedout after)
    again = _finalize(store, ledger, [hook])
    # THEN nothing more is charged, the hook ran once, and the same report comes back
    after = as_item(ledger.get_batch(BATCH)) or {}
    assert after["spent_micro_usd"] == settled["spent_micro_usd"]
    assert after["finished_at"] == settled["finished_at"]
    assert hook.calls == 1
    assert again == first


def test_a_failing_hook_is_recorded_and_the_others_still_run(
    batch: tuple[BatchStore, Ledger],
) -> None:
    store, ledger = batch
    after = _Counting()
    # WHEN finalize runs with a hook that raises, ahead of another
    report = _finalize(store, ledger, [_Broken(), after])
    # THEN the batch is settled, the next hook ran, and the failure is on the batch record
    assert report.status == "SUCCEEDED"
    assert after.calls == 1
    summary = as_item(ledger.get_batch(BATCH)) or {}
    assert summary["status"] == "SUCCEEDED"
    assert any("_Broken" in line and "spring" in line for line in summary["hook_failures"])


class _KilledAfterSettle(Exception):
    """Lambda stopped finalize at its timeout right after the settling update."""


def test_finalize_killed_after_its_settle_rolls_the_remainder_up_when_run_again(
    batch: tuple[BatchStore, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ledger = batch
    # GIVEN finalize stopped between its settle and its roll-up (found by the chaos e2e)
    roll_up = ledger.roll_up_remainder

    def killed(*_: Any) -> int:
        raise _KilledAfterSettle

    monkeypatch.setattr(ledger, "roll_up_remainder", killed)
    with pytest.raises(_KilledAfterSettle):
        _finalize(store, ledger, [])
    monkeypatch.setattr(ledger, "roll_up_remainder", roll_up)

    # WHEN Step Functions runs it again
    _finalize(store, ledger, [])

    # THEN the day rollups hold everything the batch was charged
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    rolled = sum(int(r.get("spent_micro_usd", 0)) for r in ledger.query_batch(BATCH, "DAY#"))
    assert rolled == summary.spent_micro_usd


def test_finalize_whose_settle_reply_was_lost_still_rolls_the_remainder_up(
    batch: tuple[BatchStore, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ledger = batch
    # GIVEN the settling update lands but its reply is lost: botocore sends it again, the
    # condition refuses it, and finalize sees "settled by another run" (found by the chaos e2e)
    settle = ledger.settle_batch

    def reply_lost(*args: Any, **kwargs: Any) -> None:
        settle(*args, **kwargs)

    monkeypatch.setattr(ledger, "settle_batch", reply_lost)

    # WHEN finalize runs
    _finalize(store, ledger, [])

    # THEN the day rollups still hold everything the batch was charged
    summary = ledger.get_batch(BATCH)
    assert summary is not None and summary.status == "SUCCEEDED"
    rolled = sum(int(r.get("spent_micro_usd", 0)) for r in ledger.query_batch(BATCH, "DAY#"))
    assert rolled == summary.spent_micro_usd


def test_finalize_killed_after_its_settle_runs_its_hooks_when_run_again(
    batch: tuple[BatchStore, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ledger = batch
    hook, other = _Counting(), _Counting()
    # GIVEN finalize stopped at its timeout after its settle, before any hook ran
    roll_up = ledger.roll_up_remainder

    def killed(*_: Any) -> int:
        raise _KilledAfterSettle

    monkeypatch.setattr(ledger, "roll_up_remainder", killed)
    with pytest.raises(_KilledAfterSettle):
        _finalize(store, ledger, [hook, other])
    monkeypatch.setattr(ledger, "roll_up_remainder", roll_up)
    assert hook.calls == 0

    # WHEN Step Functions runs it again, twice
    _finalize(store, ledger, [hook, other])
    _finalize(store, ledger, [hook, other])

    # THEN each hook (Batch Finished) ran once
    assert (hook.calls, other.calls) == (1, 1)


def test_finalize_whose_settle_reply_was_lost_runs_its_hooks(
    batch: tuple[BatchStore, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ledger = batch
    hook = _Counting()
    # GIVEN the settling update lands but its reply is lost (the resend is refused)
    settle = ledger.settle_batch

    def reply_lost(*args: Any, **kwargs: Any) -> None:
        settle(*args, **kwargs)

    monkeypatch.setattr(ledger, "settle_batch", reply_lost)

    # WHEN finalize runs
    _finalize(store, ledger, [hook])

    # THEN its hook ran
    assert hook.calls == 1
