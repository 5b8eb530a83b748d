"""The endpoint usage adapter: scale events round-trip, overhead lands beside the batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.ledger import Ledger
from imagebatch.costs.overhead import ScaleEvent


def test_scale_events_round_trip_and_overhead_is_kept_per_session(
    dynamodb_client: Any, ledger_table: str
) -> None:
    store = EndpointUsageStore(dynamodb_client, ledger_table)
    out = ScaleEvent(
        kind="scale_out",
        at=datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
        ready_at=datetime(2026, 11, 22, 12, 9, tzinfo=UTC),
        instances_after=1,
    )
    store.record_scale_event("ep", out)
    assert store.scale_events("ep") == [out]
    store.record_overhead("ep", out.at.isoformat(), {"b1": 120, "b2": 30}, "rule")
    store.record_overhead("ep", out.at.isoformat(), {"b1": 125}, "rule")  # replaces, not adds
    ledger = Ledger(dynamodb_client, ledger_table)
    b1 = list(ledger.query_batch("b1", "OVERHEAD#"))
    assert [r["overhead_micro_usd"] for r in b1] == [125]
    assert b1[0]["endpoint"] == "ep"
