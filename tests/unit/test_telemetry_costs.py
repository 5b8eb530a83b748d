"""What the functions cost besides their duration (Lambda INIT, CloudWatch Logs, X-Ray), per
invocation; the stack's alarms and metrics are a monthly line of their own."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from imagebatch_cli.app import app
from typer.testing import CliRunner

from imagebatch.costs import telemetry
from imagebatch.costs.prices import load_aws_prices

PRICES = load_aws_prices().region("us-east-1")


def test_a_million_invocations_price_init_logs_and_traces() -> None:
    lines = telemetry.invocation_lines(1_000_000, PRICES, "arm64")
    # INIT: half of them cold, 1.2 s at 512 MB = 300,000 GB-s at $0.0000133334
    assert lines["lambda_init"] == Decimal("300000") * Decimal("0.0000133334") * 1_000_000
    # logs: 2,600 bytes each, ingested ($0.50/GB) and kept 30 days ($0.03/GB-month)
    gb = Decimal(2_600 * 1_000_000) / Decimal(1024**3)
    assert lines["cloudwatch_logs"] == gb * Decimal("0.53") * 1_000_000
    # traces: one each, an upper bound, $5 per million
    assert lines["xray_traces"] == Decimal(5_000_000)


def test_the_stack_pays_its_alarms_and_metrics_monthly() -> None:
    bedrock = telemetry.stack_monthly(PRICES, sagemaker=False)
    assert bedrock == {
        "cloudwatch_alarms": Decimal("0.10") * 1 * 1_000_000,
        "cloudwatch_metrics": Decimal("0.30") * 10 * 1_000_000,
    }
    with_endpoint = telemetry.stack_monthly(PRICES, sagemaker=True)
    assert with_endpoint["cloudwatch_alarms"] == Decimal(500_000)


def test_every_region_prices_the_telemetry() -> None:
    for name, region in load_aws_prices().regions.items():
        for price in (
            "cloudwatch_logs_ingest_gb",
            "cloudwatch_logs_storage_gb_month",
            "cloudwatch_custom_metric_month",
            "cloudwatch_alarm_month",
            "xray_trace_recorded",
        ):
            assert region.service(price).usd > 0, (name, price)


def test_estimate_says_what_the_stack_costs_a_month_whatever_runs(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    header = {"batch": {"model": "stability.stable-image-core-v1:1", "max_cost_usd": 5}}
    item = {"id": "a", "prompt": "a red fox"}
    manifest.write_text(json.dumps(header) + "\n" + json.dumps(item) + "\n")
    result = CliRunner().invoke(app, ["estimate", str(manifest), "--region", "us-west-2"])
    assert "the stack itself, batches or not: $3.10 a month" in result.output, result.output


# --- charged to batches: the ledger's telemetry lines ---------------------------------------

SUMMARY = {
    "batch_id": "b-1",
    "status": "SUCCEEDED",
    "created_at": "2026-12-07T17:00:00.000+00:00",
    "images_total": 40,
    "images_succeeded": 40,
    "cost_micro_usd": 2_629,
    "spent_micro_usd": 3_381,
    # what a 40-image SageMaker batch in 4 chunks counted: ingest, finalize, the contact
    # sheet, and a submit and a result per chunk
    "use_lambda_requests": 11,
    "use_sfn_transitions": 11,
}


def _one_invocation() -> Decimal:
    return sum(telemetry.invocation_lines(1, PRICES, "arm64").values(), start=Decimal(0))


def test_a_batch_summary_carries_init_logs_and_traces_as_overhead_lines() -> None:
    from imagebatch.api.responses import batch_summary
    from imagebatch.costs.usage import summary_costs
    from imagebatch.models.batch_record import BatchRecord
    from imagebatch.models.money import round_micro

    record = BatchRecord.model_validate(SUMMARY)
    breakdown = summary_costs(record, PRICES)
    expected = telemetry.invocation_lines(11, PRICES, "arm64")
    # the three lines, priced from the invocations the ledger counted, are in orchestration
    assert {k: breakdown.lines[k] for k in expected} == expected
    assert breakdown.orchestration >= sum(expected.values())
    # and the query API (so `imagebatch cost`) shows each, labelled
    shown = batch_summary(record, PRICES)
    assert shown.telemetry is not None
    assert shown.telemetry.model_dump() == {
        "init": round_micro(expected["lambda_init"]),
        "logs": round_micro(expected["cloudwatch_logs"]),
        "traces": round_micro(expected["xray_traces"]),
    }


def test_a_commit_charges_its_invocation_s_init_logs_and_trace() -> None:
    from imagebatch.costs.settlement import Settlement, price_commit
    from imagebatch.costs.usage import Usage
    from imagebatch.models.money import MICRO, ceil_micro

    settlement = Settlement(chunk_id="c-1", usage=Usage(lambda_requests=1), prices=PRICES)
    charge = price_commit([], settlement, own_write_units=0, capped=False)
    request = PRICES.service("lambda_request").usd * MICRO
    assert charge.micro_usd == ceil_micro(request + _one_invocation())


def test_cost_shows_the_telemetry_lines_under_the_orchestration() -> None:
    from imagebatch_cli.views.report import categories_table
    from rich.console import Console

    from imagebatch.api.responses import batch_summary
    from imagebatch.models.batch_record import BatchRecord

    shown = batch_summary(BatchRecord.model_validate(SUMMARY), PRICES)
    console = Console(width=120, record=True)
    console.print(categories_table(shown))
    text = console.export_text()
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2]
    at = rows.index("orchestration")
    assert rows[at + 1 : at + 4] == [
        "of which Lambda INIT",
        "of which CloudWatch Logs",
        "of which X-Ray traces",
    ]
    assert rows[at + 4] == "storage (1 month)"
