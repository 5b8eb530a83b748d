"""A hold written off is charged to the batch and to the day's cost rollup alike.

The contact sheet runs after finalize has rolled the batch's remainder up; an attempt of it
killed at its timeout leaves its hold, which the next attempt writes off as spent. The chaos
e2e found that charge in the summary but in no rollup, so `costs` (which sums the rollups)
missed it."""

from __future__ import annotations

from typing import Any

from imagebatch.aws.ledger import Ledger
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus


def _rolled_up(ledger: Ledger, batch_id: str) -> int:
    return sum(int(r.get("spent_micro_usd", 0)) for r in ledger.query_batch(batch_id, "DAY#"))


def test_a_hold_written_off_is_in_the_day_rollup(dynamodb_client: Any, ledger_table: str) -> None:
    # GIVEN a capped batch, settled, whose contact sheet held budget and was killed
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch(
        "b-1",
        BatchRecord(
            batch_id="b-1",
            status=BatchStatus.RUNNING,
            models=["stability.sd3-5-large-v1:0"],
            backend="bedrock",
            max_cost_micro_usd=1_000,
            budget_left_micro_usd=1_000,
        ),
    )
    assert ledger.reserve("b-1", "contact-sheet", 120) == 120

    # WHEN the next attempt holds again (the dead attempt's hold is written off as spent)
    assert ledger.reserve("b-1", "contact-sheet", 120) == 120

    # THEN the charge is in the summary and in the day's rollup
    summary = ledger.get_batch("b-1")
    assert summary is not None and summary.spent_micro_usd == 120
    assert _rolled_up(ledger, "b-1") == summary.spent_micro_usd
