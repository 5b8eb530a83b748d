"""`--json` on every read command: one JSON document on stdout, in the documented shape
(docs/cli.md): the query API's bodies for cost/batches/costs, the report models for
validate/estimate, the catalogue for models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from imagebatch_cli.app import app
from typer.testing import CliRunner

from imagebatch.api.responses import BatchPage, BatchSummary, CostReport

runner = CliRunner()
ExportBatch = Callable[..., dict[str, Any]]


def _json(args: list[str], code: int = 0) -> Any:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_query_commands_print_the_query_api_bodies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export_batch: ExportBatch
) -> None:
    monkeypatch.chdir(tmp_path)
    export_batch(tmp_path / "out", "demo-0123456789ab", made=3, failed=1)
    summary = BatchSummary.model_validate(_json(["cost", "demo-0123456789ab", "--json"]))
    assert summary.images_succeeded == 3 and summary.costs.inference == 240_000
    page = BatchPage.model_validate(_json(["batches", "--json"]))
    assert [b.batch_id for b in page.batches] == ["demo-0123456789ab"]
    report = CostReport.model_validate(
        _json(["costs", "--since", "2026-11-01", "--group-by", "tag:project", "--json"])
    )
    assert [g.key for g in report.groups] == ["demo"]


def test_validate_estimate_and_models_print_json() -> None:
    validated = _json(["validate", "--sample", "demo", "--json"])
    assert validated["verdict"] == "accepted" and validated["images"] == 15
    assert validated["estimate"]["inference_micro_usd"] == 15 * 80_000
    estimated = _json(["estimate", "--sample", "demo", "--json"])
    assert [o["model"] for o in estimated["options"]] == ["stability.sd3-5-large-v1:0"]
    assert estimated["chosen"] == estimated["options"][0]["name"]
    catalogue = _json(["models", "--json"])
    assert "stability.sd3-5-large-v1:0" in [m["model_id"] for m in catalogue["models"]]
