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
