"""`imagebatch costs --reconcile`: the ledger beside Cost Explorer per day and service, each
difference explained; Cost Explorer is moto's, with answers set for the test."""

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
ExportBatch = Callable[..., dict[str, Any]]
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
    # ... and Cost Explorer billing its inference, plus CloudWatch, which the ledger never prices
    billed = f"{bedrock['inference_micro_usd'] / 1_000_000:.6f}"
    periods = (
        _period(since, {"AmazonCloudWatch": "0.04"}),
        _period(today, {"Amazon Bedrock": billed}, estimated=True),
    )
    args = ["costs", "--reconcile", "--since", since.isoformat(), "--until", today.isoformat()]
    args += ["--cost-tag", "aws:cloudformation:stack-name=imagebatch"]
    # WHEN reconciled
    result = cost_explorer(args, *periods)
    # THEN each day and service is a line with its reason
    assert result.exit_code == 0, result.output
    assert "ledger vs Cost Explorer" in result.output
    assert "not_priced" in result.output and "AmazonCloudWatch" in result.output
    assert "match" in result.output
    shaped = json.loads(cost_explorer([*args, "--json"], *periods).stdout)
    rows = {(line["day"], line["row"]): line for line in shaped["lines"]}
    assert rows[(today.isoformat(), BEDROCK_ROW)]["reason"] == "match"
    assert rows[(since.isoformat(), "AmazonCloudWatch")]["cost_explorer_micro_usd"] == 40_000
    overhead = bedrock["spent_micro_usd"] - bedrock["inference_micro_usd"]
    orchestration = rows.get((today.isoformat(), ORCHESTRATION_ROW))
    if overhead:  # today's orchestration: Cost Explorer has none of it yet
        assert orchestration is not None and orchestration["reason"] == "lag"
    else:
        assert orchestration is None  # nothing on either side: no line
    assert shaped["tag"] == "aws:cloudformation:stack-name=imagebatch"


def test_costs_reconcile_needs_a_stack_or_a_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_credentials: None
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMAGEBATCH_STACK", raising=False)
    monkeypatch.setattr(
        "imagebatch_cli.deployed_stack.read_samconfig",
        lambda path=None: __import__("imagebatch_cli.deployed_stack").deployed_stack.SamConfig(),
    )
    result = runner.invoke(app, ["costs", "--reconcile", "--since", "2026-11-01"])
    assert result.exit_code == 1
    assert "--stack NAME or --cost-tag" in result.output
    bad = runner.invoke(app, ["costs", "--reconcile", "--since", "2026-11-01", "--cost-tag", "x"])
    assert bad.exit_code == 1 and "KEY=VALUE" in bad.output
