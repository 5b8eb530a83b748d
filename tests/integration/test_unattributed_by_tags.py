"""Endpoint time no batch was charged is shown with the batches active in its window
(issue 19): each window's record carries them with their tags, and /costs groups the
unattributed idle by those tags, split by each batch's inference seconds in the window
(micro-dollars, the remainder to the largest). Shown, never charged: a cap is hard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from support.endpoint_day import at

from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.ledger_queries import LedgerQueries
from imagebatch.costs.grouping import group_costs
from imagebatch.costs.overhead import (
    UNATTRIBUTED,
    EndpointRequest,
    InstanceSession,
    attribute_window,
    windows,
)
from imagebatch.costs.prices import load_aws_prices
from imagebatch.models.money import round_micro

ENDPOINT = "stack-images"
INF2 = load_aws_prices().region("us-east-1").instance("ml.inf2.xlarge")
TEAMS = {"x": "team-x", "y": "team-y"}


def _request(batch_id: str, received_s: float, done_s: float, seconds: int) -> EndpointRequest:
    return EndpointRequest(
        batch_id=batch_id,
        request_id=f"{batch_id}-{received_s}",
        received_at=at(received_s),
        completed_at=at(done_s),
        inference_seconds=Decimal(seconds),
        inference_micro_usd=round_micro(Decimal(seconds) * INF2.micro_usd_per_second),
    )


def _batches(ledger: Ledger, *, capped: bool) -> None:
    """Batch x (team x) and batch y (team y); capped ones have spent their whole cap."""
    for batch_id, team in TEAMS.items():
        spent = {"max_cost_micro_usd": 1_000, "spent_micro_usd": 1_000} if capped else {}
        assert ledger.create_batch(
            batch_id,
            {"backend": "sagemaker", "models": ["sd21"], "tags": {"team": team}, **spent},
        )


def _active(store: EndpointUsageStore, start_s: float) -> list[dict[str, Any]]:
    (window,) = [w for w in store.windows(ENDPOINT) if w["start"] == at(start_s).isoformat()]
    active: list[dict[str, Any]] = json.loads(window["active"])
    return active


def _shown(client: Any, table: str, group_by: str) -> dict[str, int]:
    today = datetime.now(UTC).date().isoformat()
    groups = group_costs(LedgerQueries(client, table).cost_rollups("2026-11-22", today), group_by)
    (unattributed,) = [g for g in groups if g.key == UNATTRIBUTED]
    return unattributed.active


def test_what_capped_batches_could_not_pay_is_shown_with_their_tags(
    dynamodb_client: Any, ledger_table: str
) -> None:
    ledger = Ledger(dynamodb_client, ledger_table)
    store = EndpointUsageStore(dynamodb_client, ledger_table)
    # GIVEN two capped batches with nothing left, served in one window: x for 60 s of
    # inference, y for 40 s
    _batches(ledger, capped=True)
    requests = [_request("x", 10, 200, 60), _request("y", 20, 300, 40)]
    session = InstanceSession(start=at(0), ready=at(5), end=at(900))
    window = attribute_window(windows([session], [])[0], requests, INF2)
    # WHEN the observer charges the window
    charged = store.commit_window(ENDPOINT, window)
    # THEN no batch is charged past its cap: the window's overhead is unattributed ...
    unattributed = charged.by_batch()[UNATTRIBUTED]
    assert set(charged.by_batch()) == {UNATTRIBUTED}
    # ... and its record names the batches active in it with their tags and shares, split
    # by inference seconds, the remainder to the largest
    active = _active(store, 0)
    shares = {a["batch_id"]: a["unattributed_micro_usd"] for a in active}
    assert shares == {"x": unattributed - unattributed * 40 // 100, "y": unattributed * 40 // 100}
    assert {a["batch_id"]: a["tags"] for a in active} == {
        "x": {"team": "team-x"},
        "y": {"team": "team-y"},
    }
    # AND /costs by team shows the unattributed idle with the teams active in its window
    assert _shown(dynamodb_client, ledger_table, "tag:team") == {
        "team-x": shares["x"],
        "team-y": shares["y"],
    }
    assert _shown(dynamodb_client, ledger_table, "batch") == shares
    # AND nothing was charged to either batch
    for batch_id in TEAMS:
        summary = ledger.get_batch(batch_id)
        assert summary is not None
        assert summary.spent_micro_usd == 1_000


def test_a_window_that_served_nothing_is_shown_with_the_batches_nearest_before_it(
    dynamodb_client: Any, ledger_table: str
) -> None:
    ledger = Ledger(dynamodb_client, ledger_table)
    store = EndpointUsageStore(dynamodb_client, ledger_table)
    # GIVEN a window that served x (30 s) and y (10 s), uncapped: charged in full
    _batches(ledger, capped=False)
    # (both received before the instance was ready: its cold start is theirs)
    requests = [_request("x", 1, 200, 30), _request("y", 2, 300, 10)]
    served = InstanceSession(start=at(0), ready=at(5), end=at(900))
    first = store.commit_window(
        ENDPOINT, attribute_window(windows([served], [])[0], requests, INF2)
    )
    assert UNATTRIBUTED not in first.by_batch()
    # WHEN a later window serves nothing (an instance started that no request used)
    idle = InstanceSession(start=at(5_000), ready=at(5_300), end=at(6_000))
    charged = store.commit_window(ENDPOINT, attribute_window(windows([idle], [])[0], [], INF2))
    # THEN it is all unattributed, shown with the batches active nearest before it
    unattributed = charged.by_batch()[UNATTRIBUTED]
    assert unattributed > 0
    active = _active(store, 5_000)
    shares = {a["batch_id"]: a["unattributed_micro_usd"] for a in active}
    assert shares == {"x": unattributed - unattributed // 4, "y": unattributed // 4}
    assert _shown(dynamodb_client, ledger_table, "tag:team") == {
        "team-x": shares["x"],
        "team-y": shares["y"],
    }
