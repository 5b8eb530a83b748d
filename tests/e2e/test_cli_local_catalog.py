"""`imagebatch local catalog` as a script drives it: one JSON document on stdout with --json,
and the documented exit codes (tools/imagebatch_cli/exit_codes.py, docs/cli.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from imagebatch_cli.app import app
from imagebatch_cli.exit_codes import ExitCode
from typer.testing import CliRunner

pytestmark = pytest.mark.e2e

MODEL = "stability.sd3-5-large-v1:0"
PRICE = 80_000  # SD3.5 Large, micro-dollars per image (data/bedrock_models.json)


def _catalog(folder: Path, products: list[dict[str, str]], **config: Any) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "name": "tiny-shop",
        "products": "products.jsonl",
        "prompt_template": "A {color} {name}",
        "model": MODEL,
        "variants": [{"name": "front"}],
        **config,
    }
    (folder / "config.json").write_text(json.dumps(settings))
    (folder / "products.jsonl").write_text("".join(json.dumps(p) + "\n" for p in products))
    return folder / "products.jsonl", folder / "config.json"


def _run(products: Path, config: Path, out: Path, night: str) -> tuple[int, dict[str, Any]]:
    command = ["local", "catalog", str(products), "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(app, [*command, "--at", f"{night}T02:00:00+00:00", "--json"])
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def test_local_catalog_json_and_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    mug = {"sku": "T-1", "name": "mug", "color": "red"}

    # GIVEN a catalog whose second product lacks a field its prompt needs
    products, config = _catalog(tmp_path / "a", [mug, {"sku": "T-2", "name": "cup"}])
    # WHEN its first night runs with --json
    code, report = _run(products, config, out, "2026-11-23")
    # THEN stdout is one document: the counts, the batch's summary and where things are
    assert code == ExitCode.ERROR  # the rest ran; errors.jsonl names the product in error
    assert {k: report[k] for k in ("catalog", "products", "changed", "unchanged", "errors")} == {
        "catalog": "tiny-shop",
        "products": 2,
        "changed": 1,
        "unchanged": 0,
        "errors": 1,
    }
    assert json.loads(Path(report["errors_file"]).read_text().splitlines()[0])["sku"] == "T-2"
    batch = report["batch"]
    assert batch["status"] == "SUCCEEDED" and batch["images_succeeded"] == 1
    assert batch["costs"]["inference"] == PRICE
    assert Path(report["review_page"]).is_file()
    assert [p.name for p in Path(report["images_dir"]).glob("*.png")] == ["T-1.front-1.png"]
    # AND the Lambdas' own lines went to their log, not into the JSON on stdout
    assert Path(report["lambda_log"]).is_file()

    # WHEN the next night nothing changed (the broken product is gone)
    products, config = _catalog(tmp_path / "a", [mug])
    code, report = _run(products, config, out, "2026-11-24")
    # THEN there is no batch and nothing to report: exit 0
    assert code == ExitCode.OK
    assert report["changed"] == 0 and report["unchanged"] == 1 and report["errors"] == 0
    assert report["batch"] is None and report["errors_file"] is None
    assert report["images_dir"] is None

    # WHEN a catalog's batch is over its budget
    products, config = _catalog(tmp_path / "b", [mug], name="poor-shop", max_cost_usd=0.01)
    code, report = _run(products, config, out, "2026-11-24")
    # THEN ingest rejects it before anything is spent, and the exit code says so
    assert code == ExitCode.REJECTED
    assert report["batch"]["status"] == "REJECTED"
    assert report["batch"]["charged_micro_usd"] == 0
