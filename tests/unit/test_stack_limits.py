"""Capped by default (issue 19): the stack's DefaultMaxCostUsd, MaxCostCeilingUsd and
MaxImagesPerBatch, from template.yaml through the ingest settings to planning's verdict, as
ingest, `validate` and `estimate` see them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from imagebatch.errors import ManifestError
from imagebatch.models.bedrock_models import load_catalogue

REPO = Path(__file__).resolve().parents[2]
SD35 = "stability.sd3-5-large-v1:0"
REGION = "us-west-2"


def _write(tmp_path: Path, items: int, **batch: Any) -> Path:
    header = {"batch": {"backend": "bedrock", "model": SD35, **batch}}
    lines = [json.dumps(header)]
    lines += [json.dumps({"id": f"i{n}", "prompt": f"a photo {n}"}) for n in range(items)]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _preview(path: Path, parameters: dict[str, str] | None = None, key: str | None = None) -> Any:
    from imagebatch_cli.template_preview import preview_ingest, stack_options

    stack = stack_options(REPO / "template.yaml", parameters or {}, REGION)
    assert stack.prices is not None
    return preview_ingest(
        path, catalogue=load_catalogue(), stack=stack, prices=stack.prices, key=key
    )


def _validate(path: Path, *overrides: str) -> Any:
    from imagebatch_cli.app import app
    from typer.testing import CliRunner

    args = ["validate", str(path), "--template", str(REPO / "template.yaml"), "--region", REGION]
    if overrides:
        args += ["--parameter-overrides", " ".join(overrides)]
    return CliRunner().invoke(app, args, terminal_width=250)


def test_the_template_caps_a_batch_by_default() -> None:
    from imagebatch_cli.template_preview import stack_options

    # GIVEN the template as it deploys, without overrides
    stack = stack_options(REPO / "template.yaml", {}, REGION)
    # THEN ingest gets a default cap, a ceiling and an image limit from its parameters
    assert stack.limits.default_max_cost_usd == Decimal(50)
    assert stack.limits.max_cost_ceiling_usd == Decimal(5000)
    assert stack.limits.max_images_per_batch == 200_000


def test_a_manifest_without_max_cost_gets_the_stack_default(tmp_path: Path) -> None:
    # GIVEN a manifest that sets no max_cost_usd, on a stack whose default is $0.50
    path = _write(tmp_path, 3)
    preview = _preview(path, {"DefaultMaxCostUsd": "0.5"})
    # THEN ingest plans it capped at the default, as a manifest saying so would be
    assert preview.plan.settings.max_cost_usd == Decimal("0.5")
    assert preview.plan.cap_from_stack
    assert preview.rejection is None
    # AND over the default, it is refused for the budget like any capped batch
    over = _preview(_write(tmp_path, 40), {"DefaultMaxCostUsd": "0.5"})
    assert over.rejection is not None and "exceeds max_cost_usd $0.5" in over.rejection
    # AND a manifest's own cap, under the ceiling, wins over the default
    own = _preview(_write(tmp_path, 3, max_cost_usd=2), {"DefaultMaxCostUsd": "0.5"})
    assert own.plan.settings.max_cost_usd == Decimal(2) and not own.plan.cap_from_stack


def test_validate_shows_the_stack_default(tmp_path: Path) -> None:
    result = _validate(_write(tmp_path, 3), "DefaultMaxCostUsd=0.5")
    assert result.exit_code == 0, result.output
    assert "budget (max_cost_usd) $0.500000" in result.output
    assert "the stack's DefaultMaxCostUsd: the manifest sets none" in result.output


def test_a_cap_above_the_ceiling_is_a_line_error(tmp_path: Path) -> None:
    # GIVEN a manifest whose max_cost_usd is above the stack's ceiling
    path = _write(tmp_path, 3, max_cost_usd=20)
    # WHEN ingest plans it THEN it is refused as a whole, naming the line and the field
    with pytest.raises(ManifestError) as refused:
        _preview(path, {"MaxCostCeilingUsd": "10"})
    assert refused.value.line == 1
    assert refused.value.field == "batch.max_cost_usd"
    assert "MaxCostCeilingUsd" in str(refused.value) and "$10" in str(refused.value)
    # AND validate says so in one line, rejected
    result = _validate(path, "MaxCostCeilingUsd=10")
    assert result.exit_code == 5, result.output
    (line,) = [text for text in result.output.splitlines() if "max_cost_usd" in text]
    assert line.startswith(f"error: {path}:1: ")


def test_a_batch_over_the_image_limit_is_refused(tmp_path: Path) -> None:
    preview = _preview(_write(tmp_path, 5), {"MaxImagesPerBatch": "4"})
    assert preview.rejection is not None
    assert "5 images" in preview.rejection and "MaxImagesPerBatch 4" in preview.rejection
    assert _preview(_write(tmp_path, 4), {"MaxImagesPerBatch": "4"}).rejection is None


def test_a_catalog_night_without_a_cap_is_capped_by_the_stack(tmp_path: Path) -> None:
    from imagebatch.catalog.products import (
        CatalogConfig,
        Product,
        manifest_key,
        manifest_lines,
        plan_catalog_run,
    )

    # GIVEN a catalog config that sets no max_cost_usd, and its night's manifest
    config = CatalogConfig.model_validate(
        {
            "name": "home",
            "prompt_template": "a photo of {title}",
            "variants": [{"name": "front", "width": 1024, "height": 1024}],
            "model": SD35,
        }
    )
    plan = plan_catalog_run(config, [Product(2, "SKU1", {"title": "lamp"})], {})
    path = tmp_path / "night.jsonl"
    path.write_text("\n".join(manifest_lines(config, plan, "2026-12-07")) + "\n")
    # THEN ingest (the same path every manifest takes) caps it at the stack default
    # (at the key the catalog function writes it to: its catalog tags are reserved elsewhere)
    key = manifest_key(config, "2026-12-07")
    preview = _preview(path, {"DefaultMaxCostUsd": "1"}, key)
    assert preview.plan.settings.max_cost_usd == Decimal(1) and preview.plan.cap_from_stack
    # AND a config above the ceiling is refused like a user manifest, naming line and field
    capped = config.model_copy(update={"max_cost_usd": 20.0})
    path.write_text("\n".join(manifest_lines(capped, plan, "2026-12-07")) + "\n")
    with pytest.raises(ManifestError) as refused:
        _preview(path, {"MaxCostCeilingUsd": "10"}, key)
    assert (refused.value.line, refused.value.field) == (1, "batch.max_cost_usd")


def test_estimate_shows_the_stack_default(tmp_path: Path) -> None:
    from imagebatch_cli.app import app
    from typer.testing import CliRunner

    path = _write(tmp_path, 3)
    result = CliRunner().invoke(
        app,
        [
            "estimate",
            str(path),
            "--template",
            str(REPO / "template.yaml"),
            "--region",
            REGION,
            "--parameter-overrides",
            "DefaultMaxCostUsd=0.5",
        ],
        terminal_width=250,
    )
    assert result.exit_code == 0, result.output
    assert (
        "budget (max_cost_usd) $0.500000: the stack's DefaultMaxCostUsd (the manifest sets none)"
        in result.output
    )


def test_validate_and_estimate_show_the_ceiling_and_the_image_limit(tmp_path: Path) -> None:
    from imagebatch_cli.app import app
    from typer.testing import CliRunner

    # GIVEN a stack with its own ceiling and image limit
    path = _write(tmp_path, 3)
    overrides = ["MaxCostCeilingUsd=80", "MaxImagesPerBatch=1000"]
    expected = (
        "stack limits: max_cost_usd at most $80.000000 (MaxCostCeilingUsd), "
        "at most 1,000 images a batch (MaxImagesPerBatch)"
    )
    # WHEN validate and estimate plan a manifest on it THEN both say the limits
    validated = _validate(path, *overrides)
    assert validated.exit_code == 0, validated.output
    assert expected in validated.output
    estimated = CliRunner().invoke(
        app,
        [
            "estimate",
            str(path),
            "--template",
            str(REPO / "template.yaml"),
            "--region",
            REGION,
            "--parameter-overrides",
            " ".join(overrides),
        ],
        terminal_width=250,
    )
    assert estimated.exit_code == 0, estimated.output
    assert expected in estimated.output
    # AND validate --json carries them
    report = CliRunner().invoke(
        app,
        [
            "validate",
            str(path),
            "--json",
            "--template",
            str(REPO / "template.yaml"),
            "--region",
            REGION,
            "--parameter-overrides",
            " ".join(overrides),
        ],
    )
    data = json.loads(report.output)
    assert data["max_cost_ceiling_micro_usd"] == 80_000_000
    assert data["max_images_per_batch"] == 1000
