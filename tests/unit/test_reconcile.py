"""`imagebatch costs --reconcile`, the pure part: Cost Explorer's services mapped to the
ledger's rows, each difference given its reason, the adapter's paging (moto's Cost Explorer:
tests/integration/test_cost_explorer.py)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from imagebatch_cli.app import app
from imagebatch_cli.deployed_stack import SamConfig
from typer.testing import CliRunner

from imagebatch.aws.cost_explorer import CostExplorer
from imagebatch.costs.overhead import UNATTRIBUTED
from imagebatch.costs.reconcile import (
    BEDROCK_ROW,
    ORCHESTRATION_ROW,
    SAGEMAKER_ROW,
    LedgerDay,
    ServiceDayCost,
    ledger_day,
    reconcile,
    row_of,
)

runner = CliRunner()
OLD = date(2026, 11, 2)  # long enough ago that Cost Explorer's figures are final
TODAY = date(2026, 12, 7)


def _period(day: date, costs: dict[str, str], *, estimated: bool = False) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        "Total": {},
        "Groups": [
            {"Keys": [service], "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}
            for service, amount in costs.items()
        ],
        "Estimated": estimated,
    }


def test_the_adapter_follows_next_page_token() -> None:
    pages: list[dict[str, Any]] = [
        {"ResultsByTime": [_period(OLD, {"AWS Lambda": "0.01"})], "NextPageToken": "p2"},
        {"ResultsByTime": [_period(OLD, {"Amazon DynamoDB": "0.02"})]},
    ]
    seen: list[dict[str, Any]] = []

    class Client:
        def get_cost_and_usage(self, **kwargs: Any) -> dict[str, Any]:
            seen.append(dict(kwargs))
            return pages[len(seen) - 1]

    costs = CostExplorer(Client()).daily_costs_by_service(OLD, OLD, "k", "v")
    assert [c.service for c in costs] == ["AWS Lambda", "Amazon DynamoDB"]
    assert "NextPageToken" not in seen[0] and seen[1]["NextPageToken"] == "p2"


def test_services_map_to_the_ledgers_rows() -> None:
    assert row_of("Amazon Bedrock") == BEDROCK_ROW
    assert row_of("Stable Image Ultra (Amazon Bedrock Edition)") == BEDROCK_ROW
    assert row_of("Amazon SageMaker") == SAGEMAKER_ROW
    for service in ("AWS Lambda", "AWS Step Functions", "Amazon DynamoDB"):
        assert row_of(service) == ORCHESTRATION_ROW
    assert row_of("Amazon Simple Storage Service") == ORCHESTRATION_ROW
    # logs and traces are charged to batches per invocation now (costs.telemetry)
    assert row_of("AmazonCloudWatch") == ORCHESTRATION_ROW
    assert row_of("AWS X-Ray") == ORCHESTRATION_ROW
    assert row_of("Amazon API Gateway") is None


def test_a_ledger_day_splits_inference_by_backend_and_the_rest_is_orchestration() -> None:
    day = ledger_day(
        OLD,
        [
            {"key": "bedrock", "inference_micro_usd": 400_000, "spent_micro_usd": 401_500},
            {"key": "sagemaker", "inference_micro_usd": 90_000, "spent_micro_usd": 120_000},
            {"key": UNATTRIBUTED, "inference_micro_usd": 0, "spent_micro_usd": 7_000},
        ],
    )
    assert day == LedgerDay(
        day=OLD,
        bedrock_micro_usd=400_000,
        sagemaker_micro_usd=97_000,
        orchestration_micro_usd=31_500,
    )


def test_each_difference_has_its_reason() -> None:
    yesterday = TODAY - timedelta(days=1)
    ledger = [
        LedgerDay(
            day=OLD,
            bedrock_micro_usd=320_000,
            sagemaker_micro_usd=1_000_000,
            orchestration_micro_usd=40_000,
        ),
        LedgerDay(day=OLD + timedelta(days=1), bedrock_micro_usd=100_000),
        LedgerDay(day=yesterday, bedrock_micro_usd=500_000),
    ]
    billed = [
        ServiceDayCost(day=OLD, service="Amazon Bedrock", micro_usd=320_000),
        ServiceDayCost(day=OLD, service="Amazon SageMaker", micro_usd=1_003_000),
        ServiceDayCost(day=OLD, service="AWS Lambda", micro_usd=2_000),
        ServiceDayCost(day=OLD, service="Amazon DynamoDB", micro_usd=1_000),
        ServiceDayCost(day=OLD, service="Amazon API Gateway", micro_usd=60_000),
        ServiceDayCost(day=OLD + timedelta(days=1), service="Amazon Bedrock", micro_usd=180_000),
        ServiceDayCost(day=yesterday, service="Amazon Bedrock", micro_usd=200_000),
    ]
    result = reconcile(ledger, billed, since=OLD, until=TODAY, today=TODAY, tag="k=v")
    reasons = {(line.day, line.row): line for line in result.lines}
    assert reasons[(OLD, BEDROCK_ROW)].reason == "match"
    assert reasons[(OLD, SAGEMAKER_ROW)].reason == "rounding"
    orchestration = reasons[(OLD, ORCHESTRATION_ROW)]
    assert orchestration.cost_explorer_micro_usd == 3_000  # Lambda + DynamoDB together
    assert (orchestration.reason, orchestration.difference_micro_usd) == ("free_tier", -37_000)
    gateway = reasons[(OLD, "Amazon API Gateway")]
    assert (gateway.reason, gateway.ledger_micro_usd) == ("not_priced", None)
    assert "not priced by the ledger" in gateway.explanation
    assert reasons[(OLD + timedelta(days=1), BEDROCK_ROW)].reason == "unexplained"
    lagging = reasons[(yesterday, BEDROCK_ROW)]
    assert lagging.reason == "lag" and "about once a day" in lagging.explanation
    # days with nothing on either side print no line; the totals add up
    assert {line.day for line in result.lines} == {OLD, OLD + timedelta(days=1), yesterday}
    assert result.ledger_micro_usd == 1_960_000
    assert result.cost_explorer_micro_usd == 1_766_000


def test_the_stacks_alarms_and_metrics_explain_the_orchestration_billed_above_the_ledger() -> None:
    # GIVEN a stack whose alarms and metrics cost $3.10 a month (about $0.103334 a day)
    ledger = [LedgerDay(day=OLD, orchestration_micro_usd=40_000)]
    billed = [
        ServiceDayCost(day=OLD, service="AWS Lambda", micro_usd=30_000),
        ServiceDayCost(day=OLD, service="AmazonCloudWatch", micro_usd=110_000),
        ServiceDayCost(day=OLD + timedelta(days=1), service="AmazonCloudWatch", micro_usd=300_000),
    ]
    result = reconcile(
        ledger,
        billed,
        since=OLD,
        until=OLD + timedelta(days=1),
        today=TODAY,
        tag="k=v",
        stack_monthly_micro_usd=3_100_000,
    )
    first, second = result.lines
    # THEN what Cost Explorer billed above the batches, up to a day's share, is the stack's
    assert (first.row, first.difference_micro_usd) == (ORCHESTRATION_ROW, 100_000)
    assert first.reason == "per_stack"
    assert "per-batch ledger does not carry" in first.explanation
    # AND more than a day's share is not explained by it
    assert (second.difference_micro_usd, second.reason) == (300_000, "unexplained")
    # AND without the stack's figure nothing is explained that way
    plain = reconcile(ledger, billed, since=OLD, until=OLD, today=TODAY, tag="k=v")
    assert plain.lines[0].reason == "unexplained"


def test_an_estimated_figure_below_the_ledger_is_lag_however_old() -> None:
    result = reconcile(
        [LedgerDay(day=OLD, bedrock_micro_usd=500_000)],
        [ServiceDayCost(day=OLD, service="Amazon Bedrock", micro_usd=100_000, estimated=True)],
        since=OLD,
        until=OLD,
        today=TODAY,
        tag="k=v",
    )
    assert result.lines[0].reason == "lag"
    assert "Estimated" in result.lines[0].explanation


def test_costs_reconcile_needs_a_stack_or_a_tag(
    monkeypatch: pytest.MonkeyPatch, no_aws: None
) -> None:
    monkeypatch.delenv("IMAGEBATCH_STACK", raising=False)
    monkeypatch.setattr("imagebatch_cli.deployed_stack.read_samconfig", SamConfig)
    result = runner.invoke(app, ["costs", "--reconcile", "--since", "2026-11-01"])
    assert result.exit_code == 1
    assert "--stack NAME or --cost-tag" in result.output
    bad = runner.invoke(app, ["costs", "--reconcile", "--since", "2026-11-01", "--cost-tag", "x"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
    backwards = ["costs", "--reconcile", "--since", "2026-11-05", "--until", "2026-11-01"]
    assert runner.invoke(app, [*backwards, "--cost-tag", "k=v"]).exit_code == 2
