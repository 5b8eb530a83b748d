"""Capped by default (issue 19) on the local AWS: a manifest without max_cost_usd runs under
the stack's DefaultMaxCostUsd, and a cap above MaxCostCeilingUsd is refused as a line error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws
from support.ledger_summary import as_item

pytestmark = pytest.mark.e2e

MODEL = "stability.sd3-5-large-v1:0"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CAP_MICRO_USD = 482_000


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        parameter_overrides={
            "ChunkSize": "6",
            "DefaultMaxCostUsd": "0.482",
            "MaxCostCeilingUsd": "5",
        },
        region="us-west-2",
    )
    with local_aws(options) as running:
        yield running


def _manifest(path: Path, images: int, **settings: Any) -> Path:
    header = {"batch": {"backend": "bedrock", "model": MODEL, **settings}}
    items = [{"id": f"{path.stem}-{n}", "prompt": f"a product photo, {n}"} for n in range(images)]
    path.write_text("\n".join(json.dumps(x) for x in [header, *items]) + "\n", encoding="utf-8")
    return path


def _settled(aws: LocalAws, batch_id: str) -> dict[str, Any]:
    aws.wait_for_batch(batch_id, timeout_s=120)
    # the contact sheet, after the final status, holds budget first: read once it has settled
    aws.wait_for_execution(batch_id)
    return as_item(aws.ledger().get_batch(batch_id)) or {}


def test_a_manifest_without_a_cap_spends_within_the_stack_default(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN two images and no max_cost_usd in the manifest
    batch_id = aws.upload_manifest(_manifest(tmp_path / "uncapped.jsonl", 2))
    # WHEN it runs
    summary = _settled(aws, batch_id)
    # THEN it is capped at the stack default, makes its images and spends within it
    assert summary["status"] == "SUCCEEDED"
    assert summary["max_cost_micro_usd"] == DEFAULT_CAP_MICRO_USD
    assert 0 < summary["spent_micro_usd"] <= DEFAULT_CAP_MICRO_USD
    assert summary["reserved_micro_usd"] == 0


def test_the_stack_default_holds_a_chunk_it_cannot_cover(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN six images whose estimate fits the default cap while the chunk's hold does not
    invocations_before = aws.bedrock.stats.invocations
    batch_id = aws.upload_manifest(_manifest(tmp_path / "tight.jsonl", 6))
    # WHEN it runs
    summary = _settled(aws, batch_id)
    # THEN the budget refuses the chunk as for a manifest that set the cap itself
    assert summary["status"] == "FAILED"
    assert aws.bedrock.stats.invocations == invocations_before
    assert summary["failures_by_class"] == {"budget_exhausted": 6}
    assert 0 < summary["spent_micro_usd"] <= summary["max_cost_micro_usd"] == 482_000


def test_a_cap_above_the_ceiling_is_refused_naming_line_and_field(
    aws: LocalAws, tmp_path: Path
) -> None:
    invocations_before = aws.bedrock.stats.invocations
    batch_id = aws.upload_manifest(_manifest(tmp_path / "over.jsonl", 2, max_cost_usd=6))
    summary = as_item(aws.wait_for_batch(batch_id, timeout_s=60))
    assert summary["status"] == "REJECTED"
    assert "MaxCostCeilingUsd" in summary["rejection"]
    assert aws.bedrock.stats.invocations == invocations_before
    errors = aws.s3().get_object(Bucket=aws.bucket, Key=summary["errors_key"])
    (line,) = [json.loads(text) for text in errors["Body"].read().splitlines()]
    assert (line["line"], line["field"]) == (1, "batch.max_cost_usd")
