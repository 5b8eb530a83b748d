"""`imagebatch costs --reconcile` against moto's Cost Explorer, with GetCostAndUsage's answers
set for the test (moto's /moto-api/static/ce/cost-and-usage-results, called in process), and
the ledger exports of `local run`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from imagebatch_cli.app import app
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_api._internal.models import moto_api_backend
from typer.testing import CliRunner

from imagebatch.aws.cost_explorer import CostExplorer
from imagebatch.costs.reconcile import BEDROCK_ROW, ORCHESTRATION_ROW, ServiceDayCost

runner = CliRunner()
ExportBatch = Callable[..., dict[str, Any]]
OLD = datetime(2026, 11, 2, tzinfo=UTC).date()


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


def _answer(*periods: dict[str, Any]) -> None:
    """Queues moto's next GetCostAndUsage answer (moto's /moto-api/static/ce/... as a call)."""
    result: dict[str, Any] = {"ResultsByTime": list(periods)}
    moto_api_backend.set_ce_cost_usage(result=result, account_id=DEFAULT_ACCOUNT_ID)


@pytest.fixture
def cost_explorer(aws_credentials: None) -> Callable[..., Any]:
    """Runs the CLI against moto's Cost Explorer with `periods` as its answer. Each run gets a
    fresh moto (the local query API starts its own inside it and creates its table)."""

    def run(args: list[str], *periods: dict[str, Any]) -> Any:
        with mock_aws():
            _answer(*periods)
            return runner.invoke(app, args)

    return run


@mock_aws
def test_the_adapter_asks_daily_by_service_with_the_tag_and_reads_every_group(
    aws_credentials: None,
) -> None:
    _answer(
        _period(OLD, {"Amazon Bedrock": "0.32", "AWS Lambda": "0.0000123456"}),
        _period(OLD + timedelta(days=1), {"AmazonCloudWatch": "0.05"}, estimated=True),
    )
    client = boto3.client("ce", region_name="us-east-1")
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.ce.GetCostAndUsage", lambda params, **_: sent.append(params)
    )
    costs = CostExplorer(client).daily_costs_by_service(
        OLD, OLD + timedelta(days=1), "aws:cloudformation:stack-name", "imagebatch"
    )
    assert sent[0]["TimePeriod"] == {"Start": "2026-11-02", "End": "2026-11-04"}  # End exclusive
    assert sent[0]["Granularity"] == "DAILY"
    assert sent[0]["GroupBy"] == [{"Type": "DIMENSION", "Key": "SERVICE"}]
    assert sent[0]["Filter"]["Tags"]["Key"] == "aws:cloudformation:stack-name"
    assert sent[0]["Filter"]["Tags"]["Values"] == ["imagebatch"]
    assert costs == [
        ServiceDayCost(day=OLD, service="Amazon Bedrock", micro_usd=320_000),
        ServiceDayCost(day=OLD, service="AWS Lambda", micro_usd=12),
        ServiceDayCost(
            day=OLD + timedelta(days=1),
            service="AmazonCloudWatch",
            micro_usd=50_000,
            estimated=True,
        ),
    ]


def test_costs_reconcile_shows_the_ledger_beside_cost_explorer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export_batch: ExportBatch,
    cost_explorer: Callable[..., Any],
) -> None:
    # GIVEN a settled batch in the ledger exports (its rollup is today's) ...
    monkeypatch.chdir(tmp_path)
    export_batch(tmp_path / "out", "b-0123456789ab", made=2, failed=0)
    today = datetime.now(UTC).date()
    since = today - timedelta(days=2)
    ledger = json.loads(
        runner.invoke(
            app, ["costs", "--group-by", "backend", "--since", today.isoformat(), "--json"]
        ).stdout
    )
    (bedrock,) = ledger["groups"]
    # ... and Cost Explorer billing its inference, plus API Gateway, which the ledger never
    # prices, and CloudWatch on a day no batch ran: the stack's alarms and metrics
    billed = f"{bedrock['inference_micro_usd'] / 1_000_000:.6f}"
    periods = (
        _period(since, {"AmazonCloudWatch": "0.04", "Amazon API Gateway": "0.02"}),
        _period(today, {"Amazon Bedrock": billed}, estimated=True),
    )
    args = ["costs", "--reconcile", "--since", since.isoformat(), "--until", today.isoformat()]
    args += ["--cost-tag", "aws:cloudformation:stack-name=imagebatch"]
    # WHEN reconciled
    result = cost_explorer(args, *periods)
    # THEN each day and service is a line with its reason
    assert result.exit_code == 0, result.output
    assert "ledger vs Cost Explorer" in result.output
    assert "not_priced" in result.output and "Amazon API Gateway" in result.output
    assert "match" in result.output
    assert "alarms and custom metrics, about $3.100000 a month" in result.output
    shaped = json.loads(cost_explorer([*args, "--json"], *periods).stdout)
    rows = {(line["day"], line["row"]): line for line in shaped["lines"]}
    assert rows[(today.isoformat(), BEDROCK_ROW)]["reason"] == "match"
    assert rows[(since.isoformat(), "Amazon API Gateway")]["reason"] == "not_priced"
    stack = rows[(since.isoformat(), ORCHESTRATION_ROW)]
    assert (stack["cost_explorer_micro_usd"], stack["reason"]) == (40_000, "per_stack")
    assert shaped["stack_monthly_micro_usd"] == 3_100_000
    overhead = bedrock["spent_micro_usd"] - bedrock["inference_micro_usd"]
    orchestration = rows.get((today.isoformat(), ORCHESTRATION_ROW))
    if overhead:  # today's orchestration: Cost Explorer has none of it yet
        assert orchestration is not None and orchestration["reason"] == "lag"
    else:
        assert orchestration is None  # nothing on either side: no line
    assert shaped["tag"] == "aws:cloudformation:stack-name=imagebatch"
