"""`--json` on every read command: one JSON document on stdout, in the documented shape
(docs/cli.md): the query API's bodies for cost/batches/costs, the report models for
validate/estimate, the catalogue for models."""

from __future__ import annotations

import json
from typing import Any

from imagebatch_cli.app import app
from typer.testing import CliRunner

runner = CliRunner()


def _json(args: list[str], code: int = 0) -> Any:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_validate_estimate_and_models_print_json() -> None:
    validated = _json(["validate", "--sample", "demo", "--json"])
    assert validated["verdict"] == "accepted" and validated["images"] == 15
    assert validated["estimate"]["inference_micro_usd"] == 15 * 80_000
    estimated = _json(["estimate", "--sample", "demo", "--json"])
    assert [o["model"] for o in estimated["options"]] == ["stability.sd3-5-large-v1:0"]
    assert estimated["chosen"] == estimated["options"][0]["name"]
    catalogue = _json(["models", "--json"])
    assert "stability.sd3-5-large-v1:0" in [m["model_id"] for m in catalogue["models"]]


def test_watch_json_prints_the_batch_as_an_object(capsys: Any) -> None:
    # GIVEN a finished batch's summary, as watch reads it
    from imagebatch_cli.commands.deployed import _report

    from imagebatch.models.batch_record import BatchRecord

    summary = BatchRecord.model_validate(
        {"batch_id": "b-json", "status": "SUCCEEDED", "images_total": 2, "images_succeeded": 2}
    )
    # WHEN watch --json reports it
    _report(summary, "us-east-1", as_json=True)
    # THEN "batch" is the query API's batch summary, an object (not its repr in a string)
    printed = json.loads(capsys.readouterr().out)
    assert printed["batch"]["batch_id"] == "b-json"
    assert printed["batch"]["images_succeeded"] == 2
