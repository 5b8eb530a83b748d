"""The contact sheet is the batch's last step: a sheet invocation that dies after holding
budget leaves its hold behind, and when its retries are spent nothing would ever settle it.
The state machine's last state writes such holds off (charged in full as unsettled), so the
batch ends with nothing held."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagebatch.aws.ledger import Ledger
from imagebatch.pipeline.contact_sheet import ContactSheetEvent
from imagebatch.pipeline.contact_sheet_cost import HOLD_ID, write_off_after_sheet

ASL = Path(__file__).resolve().parents[2] / "statemachine" / "batch.asl.json"


def test_a_dead_sheet_invocation_s_hold_is_written_off_by_the_final_write_off(
    dynamodb_client: Any, ledger_table: str
) -> None:
    ledger = Ledger(dynamodb_client, ledger_table)
    assert ledger.create_batch("b1", {"max_cost_micro_usd": 100_000})
    # GIVEN a sheet invocation that held budget and died (no commit settled it)
    assert ledger.reserve("b1", HOLD_ID, 30_000) == 30_000
    # WHEN the final write-off runs after the contact sheet
    written = write_off_after_sheet(
        ContactSheetEvent(batch_id="b1", bucket="x", write_off=True), ledger=ledger
    )
    # THEN the hold is charged in full as unsettled and nothing is held any more
    assert written == 30_000
    summary = Ledger(dynamodb_client, ledger_table).get_batch("b1")
    assert summary is not None
    assert summary.reserved_micro_usd == 0
    assert summary.unsettled_micro_usd == 30_000
    assert summary.spent_micro_usd == 30_000


def test_the_state_machine_ends_a_failed_sheet_with_the_write_off() -> None:
    states = json.loads(ASL.read_text())["States"]
    catch = states["BuildContactSheet"]["Catch"][0]
    last = states[catch["Next"]]
    assert last["Type"] == "Task"
    assert last["Parameters"]["Payload"]["write_off"] is True
    assert "${ContactSheetFunctionArn}" in json.dumps(last["Parameters"])
    # its own failure never fails the batch
    assert last["Catch"][0]["ErrorEquals"] == ["States.ALL"]
