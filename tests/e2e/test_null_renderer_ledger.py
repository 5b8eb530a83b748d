"""The null renderer changes what the images look like and nothing the ledger says."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.session import LocalOptions, local_aws
from PIL import Image
from support.ledger_summary import as_item

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODEL = "stability.sd3-5-large-v1:0"
# Counted operations that do not depend on how long the model took or how well its PNGs
# compress (lambda_mb_ms and s3_bytes_written do).
RENDERER_FREE_COUNTS = (
    "use_sfn_transitions",
    "use_lambda_requests",
    "use_ddb_write_units",
    "use_s3_put_requests",
    "use_s3_get_requests",
)


def _manifest(path: Path) -> Path:
    header = {"batch": {"backend": "bedrock", "model": MODEL, "max_cost_usd": 5}}
    items: list[dict[str, Any]] = [
        {"id": "mug", "prompt": "a mug", "count": 3},
        {"id": "wide", "prompt": "a plate", "width": 1344, "height": 768, "seed": 42},
        {"id": "tall", "prompt": "a vase", "width": 768, "height": 1344, "count": 2},
        {"id": "shade", "prompt": "a lamp [[filtered]]"},
    ]
    lines = [json.dumps(header), *(json.dumps(item) for item in items)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(
    manifest: Path, renderer: str
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        renderer=renderer,
        parameter_overrides={"ChunkSize": "3"},
    )
    with local_aws(options) as aws:
        batch_id = aws.upload_manifest(manifest)
        as_item(aws.wait_for_batch(batch_id, timeout_s=300))
        # the contact sheet charges the batch after its final status: count it in both runs
        assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
        summary = as_item(aws.ledger().get_batch(batch_id))
        assert summary is not None
        records = sorted(aws.ledger().image_records(batch_id), key=lambda r: r["image_id"])
        sizes = {}
        for record in records:
            if record.get("output_key"):
                body = aws.s3().get_object(Bucket=aws.bucket, Key=record["output_key"])["Body"]
                image = Image.open(io.BytesIO(body.read()))
                image.load()
                sizes[record["image_id"]] = image.size
    return summary, records, sizes


def test_same_manifest_same_ledger_as_the_tiny_model(tmp_path: Path) -> None:
    # GIVEN one manifest (square, wide and tall images, a filtered one, a budget)
    manifest = _manifest(tmp_path / "same.jsonl")
    # WHEN it runs once with the tiny model and once with the null renderer
    tiny, tiny_records, tiny_sizes = _run(manifest, "tiny")
    null, null_records, null_sizes = _run(manifest, "null")
    # THEN the batch ends the same, image for image: status, seed, model, price
    assert tiny["status"] == null["status"] == "PARTIAL"
    for field in ("images_total", "images_succeeded", "images_failed", "cost_micro_usd"):
        assert null[field] == tiny[field], field
    assert null["images_succeeded"] == 6
    keep = ("image_id", "status", "seed", "model", "cost_micro_usd", "failure_class", "chunk_id")
    assert [{k: r.get(k) for k in keep} for r in null_records] == [
        {k: r.get(k) for k in keep} for r in tiny_records
    ]
    # AND the operations the ledger counted are the same (only time and bytes may differ)
    for field in RENDERER_FREE_COUNTS:
        assert null[field] == tiny[field], field
    # AND every image decodes, at the same size the tiny model made it
    assert null_sizes == tiny_sizes
    assert set(null_sizes.values()) == {(64, 64), (112, 64), (64, 112)}


def test_the_sagemaker_path_serves_null_images_of_the_asked_sizes(tmp_path: Path) -> None:
    # GIVEN the SageMaker backend deployed locally with the null renderer (no model folder)
    options = LocalOptions(
        template=REPO / "template.yaml",
        renderer="null",
        backend="sagemaker",
        shape_buckets="64x64,128x64",
        parameter_overrides={"ChunkSize": "4"},
    )
    header = {"batch": {"backend": "sagemaker", "model": "tiny-sd"}}
    items = [
        {"id": "mug", "prompt": "a mug", "width": 64, "height": 64, "count": 5},
        {"id": "wide", "prompt": "a plate", "width": 128, "height": 64, "seed": 9},
    ]
    manifest = tmp_path / "served.jsonl"
    lines = [header, *({"steps": 1, "guidance": 0, **item} for item in items)]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    with local_aws(options) as aws:
        # WHEN a manifest runs there
        batch_id = aws.upload_manifest(manifest)
        as_item(aws.wait_for_batch(batch_id, timeout_s=300))
        # the contact sheet charges the batch after its final status: count it in both runs
        assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
        summary = as_item(aws.ledger().get_batch(batch_id))
        assert summary is not None
        records = list(aws.ledger().image_records(batch_id))
        sizes = {}
        for record in records:
            body = aws.s3().get_object(Bucket=aws.bucket, Key=record["output_key"])["Body"]
            image = Image.open(io.BytesIO(body.read()))
            image.load()
            sizes[record["image_id"]] = image.size
    # THEN every image was served and stored at its size, with its seed
    assert summary["status"] == "SUCCEEDED", summary
    assert summary["images_succeeded"] == 6
    assert sizes["wide-1"] == (128, 64)
    assert {sizes[f"mug-{n}"] for n in range(1, 6)} == {(64, 64)}
    assert {r["image_id"]: r["seed"] for r in records}["wide-1"] == 9
