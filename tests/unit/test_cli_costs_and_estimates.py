"""One cost vocabulary and honest estimates: charged vs total explained, validate's verdict is
ingest's, estimate offers only what the manifest allows and charts it on log axes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imagebatch_cli.app import app
from imagebatch_cli.exit_codes import ExitCode
from imagebatch_cli.views.estimate import CHART_MAX_IMAGES, chart_points, estimate_figure
from imagebatch_cli.what_if import estimate_manifest
from typer.testing import CliRunner

from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.terms import charge_note
from imagebatch.models.bedrock_models import load_catalogue

runner = CliRunner()
SD35 = "stability.sd3-5-large-v1:0"


def _manifest(path: Path, header: dict[str, Any], items: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(x) for x in [{"batch": header}, *items]) + "\n")
    return path


def test_charge_note_explains_a_difference_and_stays_silent_without_one() -> None:
    assert charge_note(1_120_280, 1_120_280) is None
    note = charge_note(1_120_280, 1_120_281)
    assert note is not None and "$0.000001 more than the total $1.120280" in note
    assert "rounded up" in note
    held = charge_note(1_000_000, 1_050_000, unsettled_micro_usd=49_999)
    assert held is not None and "$0.049999 of budget holds" in held


def test_validate_gives_ingests_budget_verdict(tmp_path: Path) -> None:
    # GIVEN a manifest whose estimate is over its cap
    manifest = _manifest(
        tmp_path / "over.jsonl",
        {"backend": "bedrock", "model": SD35, "max_cost_usd": 0.1},
        [{"id": "a", "prompt": "a mug", "count": 3}],
    )
    # WHEN it is validated THEN the verdict and the words are ingest's rejection
    result = runner.invoke(app, ["validate", str(manifest)])
    assert result.exit_code == ExitCode.REJECTED, result.output
    assert "3 image(s)" in result.output and "exceeds max_cost_usd $0.1" in result.output
    report = json.loads(runner.invoke(app, ["validate", str(manifest), "--json"]).stdout)
    assert report["verdict"] == "rejected" and report["estimate"]["inference_micro_usd"] == 240_000


def test_estimate_offers_only_what_the_manifest_allows(tmp_path: Path) -> None:
    pinned = _manifest(
        tmp_path / "pinned.jsonl",
        {"backend": "bedrock", "model": SD35},
        [{"id": "a", "prompt": "a mug", "count": 4}],
    )
    result = estimate_manifest(
        pinned,
        catalogue=load_catalogue(),
        prices=load_aws_prices().region("us-east-1"),
        shape=Shape(),
        instance_types=["ml.inf2.xlarge"],
    )
    assert [o.name for o in result.options] == [f"bedrock {SD35}"]
    assert result.chosen is not None and result.chosen.model == SD35
    assert SD35 not in result.alternatives and result.alternatives
    shown = runner.invoke(app, ["estimate", str(pinned)])
    assert (
        "auto picks this" not in shown.output and "sagemaker" not in shown.output.split("other")[0]
    )


def test_a_deadline_nothing_meets_exits_non_zero_with_the_fastest(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path / "big.jsonl",
        {"backend": "bedrock", "model": SD35},
        [{"id": f"i{n}", "prompt": "a mug", "count": 10} for n in range(100)],
    )
    result = runner.invoke(app, ["estimate", str(manifest), "--deadline", "0.5"])
    assert result.exit_code == ExitCode.ERROR
    assert "no option this manifest allows meets the deadline of 0.5 min" in result.output


def test_chart_is_log_scaled_in_dollars_with_this_manifest_marked(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path / "auto.jsonl", {"backend": "auto"}, [{"id": "a", "prompt": "a mug", "count": 7}]
    )
    result = estimate_manifest(
        manifest,
        catalogue=load_catalogue(),
        prices=load_aws_prices().region("us-east-1"),
        shape=Shape(),
        instance_types=["ml.inf2.xlarge", "ml.g4dn.xlarge"],
        deadline_s=3600,
    )
    figure, points = estimate_figure(result)
    (axes,) = figure.axes
    assert axes.get_xscale() == "log" and axes.get_xlim() == (1, CHART_MAX_IMAGES)
    assert "dollars" in axes.get_ylabel()
    assert axes.yaxis.get_major_formatter()(10, 0) == "$10"
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "this manifest (7 images)" in labels
    assert "deadline" in axes.get_title()
    assert points and all(1 <= n <= CHART_MAX_IMAGES for _, _, n in points)
    assert chart_points()[0] == 1 and chart_points()[-1] == CHART_MAX_IMAGES
