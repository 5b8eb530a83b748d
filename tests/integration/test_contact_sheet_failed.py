"""A contact sheet that fails for good (its attempts all stopped at Lambda's timeout, the
state machine's retries spent, its Catch into ContactSheetFailed) leaves the hold its last
attempt took, with no later attempt to write it off: ContactSheetFailed must write it off
(issue 18). The state is taken from statemachine/batch.asl.json as it is; its payload drives
the contact sheet's use case as the Lambda would receive it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus
from imagebatch.pipeline.contact_sheet import ContactSheetEvent
from imagebatch.pipeline.contact_sheet_cost import HOLD_ID, build_and_charge

ASL_PATH = Path(__file__).resolve().parents[2] / "statemachine" / "batch.asl.json"
BATCH = "b-sheet"


def _payload_of_contact_sheet_failed(state_input: dict[str, Any]) -> dict[str, Any]:
    """What ContactSheetFailed hands the contact sheet function, its paths resolved."""
    states = json.loads(ASL_PATH.read_text(encoding="utf-8"))["States"]
    caught = states["BuildContactSheet"]["Catch"][0]["Next"]
    state = states[caught]
    assert state["Type"] == "Task", f"{caught} does nothing with the sheet's hold"
    assert state["Parameters"]["FunctionName"] == "${ContactSheetFunctionArn}"
    payload: dict[str, Any] = {}
    for key, value in state["Parameters"]["Payload"].items():
        if key.endswith(".$"):
            path = value.removeprefix("$.").removeprefix("$$.")
            payload[key.removesuffix(".$")] = state_input.get(path, "arn:execution")
        else:
            payload[key] = value
    return payload


def test_a_sheet_failed_for_good_has_its_hold_written_off(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a capped batch, settled, whose contact sheet's last attempt held budget and was
    # stopped at its timeout (the state machine's retries spent)
    ledger = Ledger(dynamodb_client, ledger_table)
    store = BatchStore(s3_client, s3_bucket)
    ledger.create_batch(
        BATCH,
        BatchRecord(
            batch_id=BATCH,
            status=BatchStatus.RUNNING,
            models=["stability.sd3-5-large-v1:0"],
            backend="bedrock",
            max_cost_micro_usd=10_000,
            budget_left_micro_usd=10_000,
        ),
    )
    assert ledger.reserve(BATCH, HOLD_ID, 120) == 120

    # WHEN the Catch enters ContactSheetFailed and it invokes the function
    payload = _payload_of_contact_sheet_failed({"batch_id": BATCH, "bucket": s3_bucket})
    build_and_charge(
        ContactSheetEvent.model_validate(payload),
        store=store,
        ledger=ledger,
        prices=load_aws_prices().region("us-east-1"),
        clock=LambdaClock(1024),
        remaining_s=lambda: 900.0,
    )

    # THEN no hold is left, its amount is charged (to the batch and the day's rollup), and
    # the sheet is not built again
    assert list(ledger.query_batch(BATCH, "RESERVATION#")) == []
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert (summary.spent_micro_usd, summary.unsettled_micro_usd) == (120, 120)
    rolled = sum(int(r.get("spent_micro_usd", 0)) for r in ledger.query_batch(BATCH, "DAY#"))
    assert rolled == 120
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"reports/{BATCH}/")
    assert listed.get("KeyCount", 0) == 0
