"""Counting and pricing operations, transitions from the definition, estimates and choice."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagebatch.aws.dynamo_items import to_item
from imagebatch.costs.estimate import (
    Shape,
    bedrock_options,
    break_even,
    choose_backend,
    chunk_reservation,
    sagemaker_options,
)
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.transitions import BATCH_TRANSITIONS, load_definition, path_transitions
from imagebatch.costs.usage import (
    Usage,
    item_size,
    price_usage,
    read_units,
    write_units,
)
from imagebatch.models.bedrock_models import load_catalogue

REPO = Path(__file__).resolve().parents[2]
PRICES = load_aws_prices().region("us-east-1")
MODEL = "stability.sd3-5-large-v1:0"


def test_transitions_per_path_are_derived_from_the_definition() -> None:
    # GIVEN the state machine definition the template deploys
    definition = load_definition(REPO / "statemachine" / "batch.asl.json")

    # WHEN its success and Catch paths are walked / THEN they match what the code charges
    assert path_transitions(definition, "GenerateChunk") == BATCH_TRANSITIONS


def test_item_size_follows_dynamodb_rules() -> None:
    # names plus values: a string by its UTF-8 bytes, a number by 1 byte per 2 digits + 1,
    # a boolean 1 byte
    item = to_item({"pk": "BATCH#x", "n": 12345, "ok": True})
    assert item_size(item) == (2 + 7) + (1 + 4) + (2 + 1)
    assert write_units(1024) == 1 and write_units(1025) == 2
    assert write_units(100, transactional=True) == 2
    assert read_units(0) == 1 and read_units(4097) == 2


def test_prices_come_from_the_data_file() -> None:
    # GIVEN 1,000 transitions and 1M Lambda requests / WHEN priced / THEN $0.025 and $0.20
    costs = price_usage(Usage(sfn_transitions=1000, lambda_requests=1_000_000), PRICES)
    assert costs.lines["stepfunctions_transitions"] == Decimal(25_000)
    assert costs.lines["lambda_requests"] == Decimal(200_000)
    # 1 GB for 1 s on arm64
    one_gb_s = price_usage(Usage(lambda_mb_ms=1024 * 1000), PRICES)
    assert one_gb_s.lines["lambda_duration"] == Decimal("0.0000133334") * 1_000_000


def test_a_reservation_bounds_the_chunk_from_above() -> None:
    amount, overhead = chunk_reservation(
        400_000, 5, memory_mb=512, lambda_seconds_bound=600, pixels_bound=1024 * 1024, prices=PRICES
    )
    assert amount == 400_000 + overhead
    # a full 600 s at 0.5 GB is in it
    assert overhead >= int(Decimal("0.0000133334") * 300 * 1_000_000)


def test_auto_picks_the_cheapest_option_within_the_deadline() -> None:
    options = bedrock_options([MODEL], load_catalogue(), PRICES, Shape())
    options += sagemaker_options(["ml.inf2.xlarge"], PRICES, Shape())
    bedrock, warm, cold = options
    # small batches: Bedrock; large: the endpoint; a deadline rules out the cold start
    assert choose_backend(options, 1) == bedrock
    assert choose_backend(options, 5000) == warm
    assert choose_backend([bedrock, cold], 5000) == cold
    # Bedrock paced by the model's 60 images/min quota: 5,000 images in about 84 minutes
    assert choose_backend([bedrock, cold], 5000, deadline_s=90 * 60) == bedrock
    assert choose_backend([bedrock, cold], 5000, deadline_s=60 * 60) is None
    assert choose_backend([cold], 5000, deadline_s=60) is None
    n = break_even(bedrock, cold)
    assert n is not None
    assert bedrock.cost_micro_usd(int(n) - 1) <= cold.cost_micro_usd(int(n) - 1)
    assert bedrock.cost_micro_usd(int(n) + 2) > cold.cost_micro_usd(int(n) + 2)


def test_estimate_command_prints_every_backend_and_writes_a_chart(tmp_path: Path) -> None:
    from imagebatch_cli.app import app

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"batch": {"model": MODEL}},
                *({"id": f"i{i}", "prompt": "a"} for i in range(40)),
            ]
        )
        + "\n"
    )
    chart = tmp_path / "chart.png"
    result = CliRunner().invoke(
        app, ["estimate", str(manifest), "--chart", str(chart)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    for name in ("bedrock", "ml.inf2.xlarge (warm)", "ml.g4dn.xlarge (cold)", "cheapest"):
        assert name in result.output
    # what ingest would do comes first: on this template's defaults (no endpoint), Bedrock
    assert "what ingest would do on this stack" in result.output
    assert "ingest would start batch backend bedrock, 1 chunk(s)" in result.output
    assert "break-even" in result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("minutes", ["0.1"])
def test_estimate_exits_1_when_no_backend_meets_the_deadline(tmp_path: Path, minutes: str) -> None:
    from imagebatch_cli.app import app

    manifest = tmp_path / "m.jsonl"
    lines = [{"batch": {"model": MODEL}}, *({"id": f"i{i}", "prompt": "a"} for i in range(500))]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = CliRunner().invoke(app, ["estimate", str(manifest), "--deadline", minutes])
    assert result.exit_code == 1
    assert "meets the deadline" in result.output
