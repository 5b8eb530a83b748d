"""The CLI's query commands (cost, batches, costs) on a batch `imagebatch local run` exported:
the export is written through the real Ledger on in-process moto (the export_batch fixture).
Moved from tests/unit/test_cli_anywhere.py, test_cli_json.py and
test_cli_costs_and_estimates.py, whose other tests are pure."""

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


# from tests/unit/test_cli_anywhere.py
def test_batches_and_costs_read_local_exports_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export_batch: ExportBatch
) -> None:
    # GIVEN a batch `local run` exported under ./out, and a folder without template.yaml
    monkeypatch.chdir(tmp_path)
    export_batch(tmp_path / "out", "demo-0123456789ab")
    # WHEN the query commands run there with their default --out
    listed = runner.invoke(app, ["batches"])
    grouped = runner.invoke(app, ["costs", "--group-by", "model", "--since", "2026-11-01"])
    # THEN they answer from the export, through the application's own query handler
    assert listed.exit_code == 0, listed.output
    assert "demo-0123456789ab" in listed.output
    assert grouped.exit_code == 0, grouped.output
    assert "stability.sd3-5-large-v1:0" in grouped.output


# from tests/unit/test_cli_json.py
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


# from tests/unit/test_cli_costs_and_estimates.py
def test_cost_names_total_and_charged_and_says_why_they_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export_batch: ExportBatch
) -> None:
    monkeypatch.chdir(tmp_path)
    summary = export_batch(tmp_path / "out", "b-0123456789ab", made=2, failed=0)
    result = runner.invoke(app, ["cost", "b-0123456789ab"])
    assert result.exit_code == 0, result.output
    for label in ("inference", "orchestration", "storage (1 month)", "total", "charged to budget"):
        assert f"│ {label} " in result.output
    shaped = json.loads(runner.invoke(app, ["cost", "b-0123456789ab", "--json"]).stdout)
    assert shaped["charged_micro_usd"] == summary["spent_micro_usd"]
    if shaped["charged_micro_usd"] != shaped["costs"]["total"]:
        assert shaped["charge_note"] in result.output.replace("\n", "")
    listed = runner.invoke(app, ["batches"])
    assert "total" in listed.output and "charged" in listed.output and "spent" not in listed.output
