"""Reuse across batches through the local AWS (issue 20): manifests uploaded one after another
to one stack, as a team re-uploads a fixed manifest. Its IAM check holds the new calls
(HeadObject, CopyObject, the image index) to the template's grants."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws

from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.bedrock_models import load_catalogue

pytestmark = pytest.mark.e2e

MODEL = "stability.sd3-5-large-v1:0"
REPO = Path(__file__).resolve().parents[2]
PRICE = load_catalogue().get(MODEL).price().micro_usd_per_image  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml", parameter_overrides={"ChunkSize": "6"}, region="us-west-2"
    )
    with local_aws(options) as running:
        yield running


def _manifest(path: Path, edits: dict[str, dict[str, Any]] | None = None, **settings: Any) -> Path:
    header = {"batch": {"backend": "bedrock", "model": MODEL, "tags": {"team": "web"}, **settings}}
    items = [{"id": f"reuse-{i}", "prompt": f"a catalogue photo, {i}"} for i in range(8)]
    items = [{**item, **(edits or {}).get(item["id"], {})} for item in items]
    lines = [json.dumps(header), *(json.dumps(item) for item in items)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(aws: LocalAws, path: Path, key: str) -> tuple[BatchRecord, int]:
    """The batch's summary once its execution ended, and the images Bedrock made for it."""
    before = aws.bedrock.stats.images_returned
    batch_id = aws.upload_manifest(path, key=key)
    aws.wait_for_batch(batch_id, timeout_s=300)
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
    summary = aws.ledger().get_batch(batch_id)
    assert summary is not None
    return summary, aws.bedrock.stats.images_returned - before


def _conserved(aws: LocalAws, summary: BatchRecord) -> None:
    records = list(aws.ledger().image_records(summary.batch_id))
    assert sum(int(r["cost_micro_usd"]) for r in records) == summary.cost_micro_usd
    rollups = list(aws.ledger().query_batch(summary.batch_id, "DAY#"))
    assert sum(int(r["spent_micro_usd"]) for r in rollups) == summary.spent_micro_usd


def test_uploads_in_sequence_make_only_what_is_new(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN an 8-image batch made once
    first, made = _run(aws, _manifest(tmp_path / "a.jsonl"), "manifests/catalogue.jsonl")
    assert made == 8 and first.status == "SUCCEEDED"
    assert "images_reused" not in first.model_fields_set

    # WHEN the manifest comes back with one line edited
    edited = _manifest(tmp_path / "b.jsonl", {"reuse-3": {"prompt": "a catalogue photo, 3b"}})
    second, made = _run(aws, edited, "manifests/catalogue-fixed.jsonl")
    # THEN exactly the edited image is made; the rest are copied and charged no inference
    assert made == 1
    assert second.images_succeeded == 8
    assert (second.images_reused, second.reuse_saved_micro_usd) == (7, 7 * PRICE)
    assert second.cost_micro_usd == PRICE
    s3 = aws.s3()
    copy = s3.get_object(Bucket=aws.bucket, Key=f"outputs/{second.batch_id}/reuse-0-1.png")
    source = s3.get_object(Bucket=aws.bucket, Key=f"outputs/{first.batch_id}/reuse-0-1.png")
    assert copy["Body"].read() == source["Body"].read()
    assert copy["Metadata"]["batch-id"] == second.batch_id
    _conserved(aws, second)

    # WHEN the first manifest's bytes are uploaded under a new key
    third, made = _run(aws, _manifest(tmp_path / "c.jsonl"), "manifests/catalogue-copy.jsonl")
    # THEN nothing is made
    assert made == 0 and third.images_reused == 8 and third.cost_micro_usd == 0
    _conserved(aws, third)

    # WHEN a source image is deleted and `reuse: false` is on one item
    s3.delete_object(Bucket=aws.bucket, Key=f"outputs/{first.batch_id}/reuse-5-1.png")
    fourth, made = _run(
        aws,
        _manifest(tmp_path / "d.jsonl", {"reuse-6": {"reuse": False}}),
        "manifests/catalogue-again.jsonl",
    )
    # THEN the deleted one and the forced one are made, the rest copied
    assert made == 2 and fourth.images_reused == 6
    _conserved(aws, fourth)

    # WHEN the header says reuse: false
    fifth, made = _run(aws, _manifest(tmp_path / "e.jsonl", reuse=False), "manifests/fresh.jsonl")
    # THEN every image is made
    assert made == 8 and "images_reused" not in fifth.model_fields_set
