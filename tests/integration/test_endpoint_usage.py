"""The endpoint observer on a simulated day, on the ledger table (moto): the result path's
commits record each request under the endpoint, the observer samples DescribeEndpoint at each
state change and attributes each window; batch summaries, OVERHEAD records, day rollups and
the unattributed line together hold every billed micro-dollar, and a capped batch is never
charged past its cap."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from imagebatch_cli.views.report import categories_table
from rich.console import Console
from support.endpoint_day import Submitted, at, simulate
from support.ledger_summary import as_item

from imagebatch.api.responses import batch_summary
from imagebatch.aws.batch_items import record_from_plain
from imagebatch.aws.endpoint_usage import CHARGE_ATTEMPTS, EndpointUsageStore, request_put
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.ledger_queries import LedgerQueries
from imagebatch.aws.sagemaker_endpoints import EndpointInstances
from imagebatch.costs.grouping import group_costs
from imagebatch.costs.overhead import (
    UNATTRIBUTED,
    EndpointRequest,
    InstanceSample,
    OverheadLine,
    Window,
)
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.settlement import Settlement
from imagebatch.errors import StorageError
from imagebatch.pipeline.endpoint_observer import observe_endpoint

ENDPOINT = "stack-images"
INF2 = load_aws_prices().region("us-east-1").instance("ml.inf2.xlarge")


class DescribeEndpointAnswers:
    """SageMaker hosting's DescribeEndpoint, answering from the simulated day's counts (the
    response shape boto3 returns)."""

    def __init__(self, samples: list[InstanceSample]) -> None:
        self._samples = samples
        self.now = samples[0].at

    def describe_endpoint(self, *, EndpointName: str) -> Mapping[str, Any]:
        assert EndpointName == ENDPOINT
        seen = [s for s in self._samples if s.at <= self.now]
        last = seen[-1] if seen else InstanceSample(at=self.now, desired=0, current=0)
        return {
            "EndpointName": ENDPOINT,
            "EndpointStatus": "Updating" if last.desired != last.current else "InService",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "CurrentInstanceCount": last.current,
                    "DesiredInstanceCount": last.desired,
                }
            ],
        }


def test_a_simulated_day_is_attributed_on_the_ledger_to_the_micro_dollar(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a day: two overlapping batches (one with a retried request), a batch after an
    # idle gap of hours, and a capped batch whose cap leaves little for overhead
    submitted = [
        Submitted("b1", 3_600, (30, 30, 30)),
        Submitted("b2", 3_610, (20, 20), dies_after_s=25, partial=True),
        Submitted("b1", 3_620, (30,), dies_after_s=10),
        Submitted("capped", 3_700, (10,)),
        Submitted("b4", 50_000, (40, 40)),
    ]
    day = simulate(submitted, INF2, cold_start_s=480, idle_tail_s=480, max_instances=2)
    ledger = Ledger(dynamodb_client, ledger_table)
    inference = {b: 0 for b in ("b1", "b2", "capped", "b4")}
    for r in day.requests:
        inference[r.batch_id] += r.inference_micro_usd
    cap = inference["capped"] + 50_000
    for batch_id in inference:
        capped = {"max_cost_micro_usd": cap} if batch_id == "capped" else {}
        ledger.create_batch(
            batch_id, {"backend": "sagemaker", "models": ["sd-2-1"], "tags": {}, **capped}
        )
    # WHEN the result path commits each request (its calls as rework: no image records
    # here) and the observer runs at each state change, as the EventBridge rule invokes it
    usage = EndpointUsageStore(dynamodb_client, ledger_table)
    describe = DescribeEndpointAnswers(day.samples)
    instances = EndpointInstances(describe, ENDPOINT)
    events = sorted(
        [(s.at, "sample", None) for s in day.samples]
        + [(r.completed_at, "request", r) for r in day.requests],
        key=lambda e: (e[0], e[1] == "sample"),
    )
    for moment, _kind, req in events:
        if req is not None:
            ledger.commit_images(
                req.batch_id,
                [],
                Settlement(
                    chunk_id=req.request_id,
                    rework_micro_usd=req.inference_micro_usd,
                    request_key=req.request_id,
                    endpoint=ENDPOINT,
                    endpoint_request=req,
                ),
                capped=req.batch_id == "capped",
                rollup_model="sd-2-1",
            )
        else:
            describe.now = moment
            observe_endpoint(instances, usage, INF2, now=lambda m=moment: m)  # type: ignore[misc]
    # a schedule tick later changes nothing
    describe.now = at(day.end_s + 60)
    again = observe_endpoint(instances, usage, INF2, now=lambda: at(day.end_s + 60))
    assert not again.recorded and again.attributed == []

    # THEN spent by the batches + unattributed idle = instance-seconds x price, exactly
    truth = int(day.instance_seconds() * INF2.micro_usd_per_second)
    summaries = {b: as_item(ledger.get_batch(b)) or {} for b in inference}
    windows = usage.windows(ENDPOINT)
    assert len(windows) == 2
    unattributed = sum(int(w["unattributed_micro_usd"]) for w in windows)
    spent = sum(int(s["spent_micro_usd"]) for s in summaries.values())
    assert spent + unattributed == truth
    # each batch: its inference, plus its OVERHEAD records, is what it spent
    for batch_id, summary in summaries.items():
        overhead = sum(int(r["overhead_micro_usd"]) for r in usage.overhead_records(batch_id))
        assert int(summary["spent_micro_usd"]) == inference[batch_id] + overhead
        assert int(summary.get("endpoint_overhead_micro_usd", 0)) == overhead
        assert overhead > 0
    # the capped batch stops at its cap; what it could not pay is shown as unattributed
    capped = summaries["capped"]
    assert int(capped["spent_micro_usd"]) + int(capped["budget_left_micro_usd"]) == cap
    assert int(capped["spent_micro_usd"]) == cap
    (record,) = usage.overhead_records("capped")
    assert int(record["over_cap_micro_usd"]) > 0
    # /costs: the day rollups (batches and the endpoint's unattributed line) sum to it too
    queries = LedgerQueries(dynamodb_client, ledger_table)
    # (the commits roll up on the day they run, today; the windows on the simulated day)
    today = datetime.now(UTC).date().isoformat()
    groups = group_costs(queries.cost_rollups("2026-11-22", today), "batch")
    by_key = {g.key: g.spent_micro_usd for g in groups}
    assert by_key[UNATTRIBUTED] == unattributed
    assert sum(by_key.values()) == truth
    by_backend = group_costs(queries.cost_rollups("2026-11-22", today), "backend")
    assert {g.key: g.spent_micro_usd for g in by_backend}[UNATTRIBUTED] == unattributed
    # and the batch view shows its share of the endpoint's time
    shown = batch_summary(record_from_plain(summaries["b1"]), load_aws_prices().region("us-east-1"))
    assert shown.endpoint_overhead_micro_usd == summaries["b1"]["endpoint_overhead_micro_usd"]
    assert "endpoint cold start + idle" in _render(categories_table(shown))


def test_samples_are_recorded_only_when_the_counts_change(
    dynamodb_client: Any, ledger_table: str
) -> None:
    usage = EndpointUsageStore(dynamodb_client, ledger_table)
    samples = [InstanceSample(at=at(0), desired=1, current=0)]
    describe = DescribeEndpointAnswers(samples)
    instances = EndpointInstances(describe, ENDPOINT)
    assert usage.at_zero(ENDPOINT)
    moments: list[datetime] = [at(0), at(60), at(120)]
    runs = [observe_endpoint(instances, usage, INF2, now=lambda m=m: m) for m in moments]  # type: ignore[misc]
    assert [r.recorded for r in runs] == [True, False, False]
    assert usage.samples_since(ENDPOINT, None) == samples
    assert not usage.at_zero(ENDPOINT)


def _render(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_a_window_waits_for_results_still_on_their_way(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN an instance up from 0 to 100 s, whose request's result is recorded late
    usage = EndpointUsageStore(dynamodb_client, ledger_table)
    samples = [
        InstanceSample(at=at(0), desired=1, current=1),
        InstanceSample(at=at(100), desired=0, current=0),
    ]
    describe = DescribeEndpointAnswers(samples)
    instances = EndpointInstances(describe, ENDPOINT)
    settle = timedelta(seconds=120)
    for moment in (at(0), at(100), at(150)):
        describe.now = moment
        run = observe_endpoint(instances, usage, INF2, now=lambda m=moment: m, settle=settle)  # type: ignore[misc]
        # THEN nothing is attributed while the window may still get results
        assert run.attributed == []
    late = EndpointRequest(
        batch_id="b1",
        request_id="r1",
        received_at=at(10),
        completed_at=at(60),
        inference_seconds=Decimal(40),
        inference_micro_usd=40 * 275,
    )
    Ledger(dynamodb_client, ledger_table).create_batch("b1", {"backend": "sagemaker"})
    dynamodb_client.transact_write_items(TransactItems=[request_put(ledger_table, ENDPOINT, late)])
    describe.now = at(221)
    run = observe_endpoint(instances, usage, INF2, now=lambda: at(221), settle=settle)
    # AND once settled, the late result is inference, not idle
    (window,) = run.attributed
    assert window.inference_micro_usd == 40 * 275
    assert window.by_batch() == {"b1": (100 - 40) * 275}


class _BudgetMovesFirst:
    """The table, where another writer takes from the batch's budget_left just before each
    of the first `times` overhead transactions (a chunk holding meanwhile)."""

    def __init__(self, client: Any, table: str, batch_id: str, times: int) -> None:
        self._client = client
        self._table = table
        self._batch_id = batch_id
        self.left = times
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions += 1
        if self.left > 0:
            self.left -= 1
            Ledger(self._client, self._table).reserve(self._batch_id, f"c{self.left}", 100)
        return self._client.transact_write_items(**kwargs)


def _overhead_window(batch_id: str, micro_usd: int) -> Window:
    return Window(
        start=at(0),
        end=at(100),
        closed=True,
        sessions=(),
        instance_seconds=Decimal(100),
        billed_micro_usd=micro_usd,
        lines=(OverheadLine(charged_to=batch_id, kind="idle", micro_usd=micro_usd),),
    )


def test_a_budget_moved_meanwhile_is_read_again_and_charged_within_it(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a capped batch with 1000 left, whose window's idle is 950, and a chunk that holds
    # 100 between the observer's read and its first transaction
    Ledger(dynamodb_client, ledger_table).create_batch("b1", {"max_cost_micro_usd": 1000})
    client: Any = _BudgetMovesFirst(dynamodb_client, ledger_table, "b1", times=1)
    # WHEN the window is committed
    charged = EndpointUsageStore(client, ledger_table).commit_window(
        ENDPOINT, _overhead_window("b1", 950)
    )
    # THEN the refused charge is worked out again from the new budget_left: 900, the rest shown
    assert charged.by_batch() == {"b1": 900, UNATTRIBUTED: 50}
    summary = Ledger(dynamodb_client, ledger_table).get_batch("b1")
    assert summary is not None
    assert summary.budget_left_micro_usd == 0 and summary.spent_micro_usd == 900


def test_a_charge_refused_every_time_gives_up_after_its_attempts(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a capped batch whose budget another writer moves before every transaction
    Ledger(dynamodb_client, ledger_table).create_batch("b1", {"max_cost_micro_usd": 10**6})
    client: Any = _BudgetMovesFirst(dynamodb_client, ledger_table, "b1", times=10**6)
    window = _overhead_window("b1", 10**6 - 50)
    # WHEN the window is committed THEN it stops after CHARGE_ATTEMPTS, as a transient error
    with pytest.raises(StorageError) as caught:
        EndpointUsageStore(client, ledger_table).commit_window(ENDPOINT, window)
    assert caught.value.transient
    assert client.transactions == CHARGE_ATTEMPTS
    # AND nothing was charged or recorded: the observer's next run charges the window
    summary = Ledger(dynamodb_client, ledger_table).get_batch("b1")
    assert summary is not None and summary.spent_micro_usd == 0
    assert EndpointUsageStore(dynamodb_client, ledger_table).windows(ENDPOINT) == []
