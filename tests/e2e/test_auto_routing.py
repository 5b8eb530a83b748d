"""`backend: auto` on the local stack with the local endpoint: ingest chooses per item, before
any work, and the choice is what runs and what the records say.

The endpoint serves the tiny model (`tiny-sd`) at 64x64 and 1024x1024 and stands in for SD3.5
Large. Images at 1024x1024 are rendered at 64x64 by both local emulators (the local scale);
the prices are the real ones: SD3.5 Large $0.08 an image on Bedrock against about $0.05 of
inf2 seconds on the endpoint, plus about $0.38 of cold start and idle tail when it is at zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.session import TINY_MODEL_ID, LocalAws, LocalOptions, local_aws
from support.ledger_summary import as_item

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SD35 = "stability.sd3-5-large-v1:0"
CORE = "stability.stable-image-core-v1:1"


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        backend="sagemaker",
        shape_buckets="64x64,1024x1024",
        parameter_overrides={"ChunkSize": "5", "SageMakerBedrockEquivalents": SD35},
    )
    with local_aws(options) as running:
        yield running


def _run(aws: LocalAws, path: Path, items: list[dict[str, Any]], **settings: Any) -> str:
    header = {"batch": {"backend": "auto", **settings}}
    path.write_text("\n".join(json.dumps(x) for x in [header, *items]) + "\n", encoding="utf-8")
    batch_id = aws.upload_manifest(path)
    summary = as_item(aws.wait_for_batch(batch_id, timeout_s=300))
    assert summary["status"] == "SUCCEEDED", summary
    # the contact sheet comes after the final status; the next batch starts after it
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
    return batch_id


def _made(aws: LocalAws, batch_id: str) -> dict[str, tuple[str, str]]:
    records = list(aws.ledger().image_records(batch_id))
    assert all(r["status"] == "SUCCEEDED" for r in records), records
    return {r["image_id"]: (r["backend"], r["model"]) for r in records}


def _at_zero(aws: LocalAws) -> None:
    aws.sagemaker.scale_in()
    # what DescribeEndpoint (and so the observer's samples ingest reads) now says
    assert (aws.sagemaker.desired, aws.sagemaker.current) == (0, 0)


def test_a_small_batch_goes_to_bedrock_when_the_endpoint_is_at_zero(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN the endpoint at zero and two images either backend could make
    _at_zero(aws)
    served_before = aws.sagemaker.completed
    items = [{"id": f"mug{i}", "prompt": "a mug", "model": SD35} for i in range(2)]
    # WHEN the batch runs
    batch_id = _run(aws, tmp_path / "small.jsonl", items)
    # THEN a cold start and idle tail (about $0.38) outweigh $0.16 of Bedrock: Bedrock made them
    summary = as_item(aws.ledger().get_batch(batch_id))
    assert summary is not None
    assert summary["backend"] == "bedrock"
    assert summary["backend_choice"].startswith("bedrock")
    assert "(cold)" in summary["backend_choice"]
    assert _made(aws, batch_id) == {"mug0-1": ("bedrock", SD35), "mug1-1": ("bedrock", SD35)}
    assert aws.sagemaker.completed == served_before


def test_enough_images_or_a_warm_endpoint_go_to_the_endpoint(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN the endpoint at zero and 20 images: $1.60 on Bedrock, about $1.40 with a cold start
    _at_zero(aws)
    items = [{"id": "mugs", "prompt": "a mug", "model": SD35, "count": 10}]
    items.append({"id": "cups", "prompt": "a cup", "model": SD35, "count": 10})
    batch_id = _run(aws, tmp_path / "many.jsonl", items)
    # THEN the endpoint made them, and the records carry its model, not the Bedrock one
    summary = as_item(aws.ledger().get_batch(batch_id))
    assert summary is not None
    assert summary["backend"] == "sagemaker"
    assert summary["models"] == [TINY_MODEL_ID]
    made = _made(aws, batch_id)
    assert len(made) == 20
    assert set(made.values()) == {("sagemaker", TINY_MODEL_ID)}
    record = next(iter(aws.ledger().image_records(batch_id)))
    head = aws.s3().head_object(Bucket=aws.bucket, Key=record["output_key"])
    assert head["Metadata"]["model"] == TINY_MODEL_ID
    assert "ml.inf2.xlarge" in record["price_source"]
    # AND with the endpoint still up, two images are cheaper there too (no cold start to pay)
    warm = _run(aws, tmp_path / "warm.jsonl", [{**items[0], "count": 2}])
    warm_summary = as_item(aws.ledger().get_batch(warm))
    assert warm_summary is not None
    assert warm_summary["backend"] == "sagemaker"
    assert "(warm)" in warm_summary["backend_choice"]
    assert set(_made(aws, warm).values()) == {("sagemaker", TINY_MODEL_ID)}
    _at_zero(aws)


def test_a_mixed_manifest_splits_per_item(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN the endpoint's own model (endpoint only), SD3.5 at a size outside the buckets and
    # Stable Image Core it does not stand in for (Bedrock only), SD3.5 at a bucket size
    # (either), and a line neither can make
    _at_zero(aws)
    items: list[dict[str, Any]] = [
        {"id": "own", "prompt": "a mug", "model": TINY_MODEL_ID, "width": 64, "height": 64},
        {"id": "wide", "prompt": "a cup", "model": SD35, "width": 1344, "height": 768},
        {"id": "core", "prompt": "a plate", "model": CORE},
        {"id": "either", "prompt": "a bowl", "model": SD35, "count": 2},
        {"id": "odd", "prompt": "a jug", "model": TINY_MODEL_ID, "width": 96, "height": 96},
    ]
    batch_id = _run(aws, tmp_path / "mixed.jsonl", items, on_invalid="skip")
    # THEN each item ran where it can be made; the images either could make went to the
    # endpoint, which the batch starts anyway
    summary = as_item(aws.ledger().get_batch(batch_id))
    assert summary is not None
    assert summary["backend"] == "mixed"
    assert summary["backends"] == {"bedrock": 2, "sagemaker": 3}
    assert _made(aws, batch_id) == {
        "own-1": ("sagemaker", TINY_MODEL_ID),
        "wide-1": ("bedrock", SD35),
        "core-1": ("bedrock", CORE),
        "either-1": ("sagemaker", TINY_MODEL_ID),
        "either-2": ("sagemaker", TINY_MODEL_ID),
    }
    assert summary["cost_micro_usd"] == sum(
        r["cost_micro_usd"] for r in aws.ledger().image_records(batch_id)
    )
    # AND the line neither can make is a line error naming both reasons
    body = aws.s3().get_object(Bucket=aws.bucket, Key=summary["errors_key"])["Body"].read()
    errors = [json.loads(line) for line in body.decode().splitlines()]
    assert {(e["line"], e["field"]) for e in errors} == {(6, "model"), (6, "width")}
    _at_zero(aws)
