"""Throttling that loses nothing, proven through the local AWS under injected faults.

200 images; the local Bedrock throttles 30% of calls at random and refuses 5% as
content-filtered. Backoff is shortened (RETRY_BASE_MS) so the test is quick, but it is the
same retry code a deployment runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagebatch_cli.commands.redrive import build_redrive, read_s3_reports
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws
from support.ledger_summary import as_item

from imagebatch.aws.deployed import DataBucket
from imagebatch.models.bedrock_models import load_catalogue

pytestmark = pytest.mark.e2e

MODEL = "stability.sd3-5-large-v1:0"
REPO = Path(__file__).resolve().parents[2]
IMAGES = 200


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        throttle_rate=0.3,
        content_filter_rate=0.05,
        fault_seed=11,
        parameter_overrides={"ChunkSize": "50"},
        function_environment={"RETRY_BASE_MS": "5", "RETRY_CAP_MS": "80"},
    )
    with local_aws(options) as running:
        yield running


def _manifest(path: Path, items: list[dict[str, Any]]) -> Path:
    header = {"batch": {"backend": "bedrock", "model": MODEL, "on_invalid": "reject"}}
    path.write_text("\n".join(json.dumps(line) for line in [header, *items]) + "\n")
    return path


def _jsonl(aws: LocalAws, key: str) -> list[dict[str, Any]]:
    body = aws.s3().get_object(Bucket=aws.bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def _output_keys(aws: LocalAws, batch_id: str) -> list[str]:
    keys: list[str] = []
    paginator = aws.s3().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=aws.bucket, Prefix=f"outputs/{batch_id}/"):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def test_throttled_and_refused_images_are_never_lost_or_charged_twice(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN 200 single-image items (every seventh 16:9)
    items = [
        {"id": f"p{i:03d}", "prompt": f"product shot {i}"}
        | ({"width": 1344, "height": 768} if i % 7 == 0 else {})
        for i in range(IMAGES)
    ]
    price = load_catalogue().get(MODEL).price_for(1024, 1024).micro_usd_per_image  # type: ignore[union-attr]
    before = aws.bedrock.stats

    # WHEN the batch runs against a Bedrock that throttles 30% and refuses 5%
    batch_id = aws.upload_manifest(_manifest(tmp_path / "pressure.jsonl", items))
    summary = as_item(aws.wait_for_batch(batch_id, timeout_s=600))
    stats = aws.bedrock.stats
    returned = stats.images_returned - before.images_returned
    filtered = stats.filtered - before.filtered
    throttled = stats.throttled - before.throttled

    # THEN the faults really happened: throttles were retried, some images were refused
    assert throttled > 0 and filtered > 0
    assert stats.errors == before.errors  # nothing but the injected faults
    # AND every image is accounted for: made, or refused and recorded
    assert summary["images_total"] == IMAGES
    assert summary["images_succeeded"] == returned
    assert summary["images_failed"] == filtered
    assert returned + filtered == IMAGES
    assert summary["status"] == "PARTIAL"

    # AND every other image was generated exactly once: as many distinct PNGs as Bedrock
    # returned images, one ledger record each
    records = list(aws.ledger().image_records(batch_id))
    assert len(records) == IMAGES == len({r["image_id"] for r in records})
    made = {r["image_id"] for r in records if r["status"] == "SUCCEEDED"}
    keys = _output_keys(aws, batch_id)
    assert len(keys) == len(made) == returned
    assert {key.rsplit("/", 1)[-1].removesuffix(".png") for key in keys} == made

    # AND the ledger charges exactly the images Bedrock returned
    assert summary["cost_micro_usd"] == returned * price
    assert sum(r["cost_micro_usd"] for r in records) == summary["cost_micro_usd"]
    assert all(r["cost_micro_usd"] == 0 for r in records if r["status"] == "FAILED")

    # AND the refused ones are in the report with their class and the model's reason
    report = json.loads(
        aws.s3()
        .get_object(Bucket=aws.bucket, Key=f"reports/{batch_id}/summary.json")["Body"]
        .read()
    )
    assert report["failures_by_class"] == {"content_filtered": filtered}
    failed = _jsonl(aws, f"reports/{batch_id}/failed.jsonl")
    refused = {f["image_id"] for f in failed}
    assert len(failed) == filtered and refused == {r["image_id"] for r in records} - made
    assert {(f["failure_class"], f["failure_reason"]) for f in failed} == {
        ("content_filtered", "Filter reason: prompt")
    }

    # AND the quota-derived concurrency was planned and recorded for the batch
    assert summary["map_max_concurrency"] * summary["chunk_concurrency"] <= summary["in_flight"]

    # WHEN the report's redrive manifest is built and uploaded (the filter no longer fires)
    redrive = build_redrive(*read_s3_reports(DataBucket(aws.s3(), aws.bucket), batch_id))
    assert redrive.items == filtered and dict(redrive.classes) == {"content_filtered": filtered}
    aws.bedrock.content_filter_rate = 0.0
    before_redrive = aws.bedrock.stats
    redrive_id = aws.upload_manifest(redrive.write(tmp_path / f"redrive-{batch_id}.jsonl"))
    again = as_item(aws.wait_for_batch(redrive_id, timeout_s=300))

    # THEN it runs exactly the refused images, each once, and charges only those
    after = aws.bedrock.stats
    assert again["status"] == "SUCCEEDED"
    assert again["images_total"] == again["images_succeeded"] == filtered
    assert after.images_returned - before_redrive.images_returned == filtered
    redriven = {r["image_id"] for r in aws.ledger().image_records(redrive_id)}
    assert redriven == {f"{image_id}-1" for image_id in refused}
    assert again["cost_micro_usd"] == filtered * price
    # Seeds carry over, so a redriven image is the image that was asked for the first time.
    original_seeds = {r["image_id"]: r["seed"] for r in records}
    for record in aws.ledger().image_records(redrive_id):
        assert record["seed"] == original_seeds[record["image_id"].removesuffix("-1")]
