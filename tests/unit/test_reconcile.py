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
    assert row_of("AmazonCloudWatch") is None
    assert row_of("AWS X-Ray") is None


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
        ServiceDayCost(day=OLD, service="AmazonCloudWatch", micro_usd=60_000),
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
    cloudwatch = reasons[(OLD, "AmazonCloudWatch")]
    assert (cloudwatch.reason, cloudwatch.ledger_micro_usd) == ("not_priced", None)
    assert "not priced by the ledger" in cloudwatch.explanation
    assert reasons[(OLD + timedelta(days=1), BEDROCK_ROW)].reason == "unexplained"
    lagging = reasons[(yesterday, BEDROCK_ROW)]
    assert lagging.reason == "lag" and "about once a day" in lagging.explanation
    # days with nothing on either side print no line; the totals add up
    assert {line.day for line in result.lines} == {OLD, OLD + timedelta(days=1), yesterday}
    assert result.ledger_micro_usd == 1_960_000
    assert result.cost_explorer_micro_usd == 1_766_000


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
