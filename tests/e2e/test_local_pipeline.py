"""The whole pipeline through the local AWS: template, handlers, state machine, local model."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagebatch_cli.local.pipeline import LocalAws, LocalOptions, local_aws
from PIL import Image

from imagebatch.costs.estimate import Shape, bedrock_options
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import summary_costs
from imagebatch.models.bedrock_models import load_catalogue

pytestmark = pytest.mark.e2e

MODEL = "stability.sd3-5-large-v1:0"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(template=REPO / "template.yaml", parameter_overrides={"ChunkSize": "6"})
    with local_aws(options) as running:
        yield running


def _write_manifest(path: Path, items: list[dict[str, Any]], **settings: Any) -> Path:
    header = {"batch": {"backend": "bedrock", "model": MODEL, **settings}}
    lines = [json.dumps(header), *(json.dumps(item) for item in items)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _items(n: int, prefix: str = "item") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i in range(n):
        item: dict[str, Any] = {"id": f"{prefix}-{i:02d}", "prompt": f"a product photo, {i}"}
        if i % 5 == 0:
            item.update(width=1344, height=768)
        items.append(item)
    return items


def _ingest_calls(aws: LocalAws) -> int:
    ingest = aws.stack.physical["IngestFunction"]
    return sum(1 for call in aws.runtime.invocations if call.function == ingest)


def _output_objects(aws: LocalAws, batch_id: str) -> list[dict[str, Any]]:
    listing = aws.s3().list_objects_v2(Bucket=aws.bucket, Prefix=f"outputs/{batch_id}/")
    return [dict(obj) for obj in listing.get("Contents", [])]


def test_twenty_items_become_images_and_an_exact_ledger(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN a 20-item manifest (every fifth item 16:9)
    manifest = _write_manifest(tmp_path / "twenty.jsonl", _items(20), max_cost_usd=10)
    price = load_catalogue().get(MODEL).price().micro_usd_per_image  # type: ignore[union-attr]
    returned_before = aws.bedrock.stats.images_returned

    # WHEN it is dropped under manifests/
    batch_id = aws.upload_manifest(manifest)
    summary = aws.wait_for_batch(batch_id, timeout_s=300)

    # THEN 20 decodable PNGs are in S3 with their provenance in the metadata
    assert summary["status"] == "SUCCEEDED"
    objects = _output_objects(aws, batch_id)
    assert len(objects) == 20
    s3 = aws.s3()
    for obj in objects:
        got = s3.get_object(Bucket=aws.bucket, Key=obj["Key"])
        image = Image.open(io.BytesIO(got["Body"].read()))
        image.load()
        wide = obj["Key"].split("/")[-1].split("-")[1] in {"00", "05", "10", "15"}
        assert image.size == ((112, 64) if wide else (64, 64))
        assert got["Metadata"]["model"] == MODEL
        assert len(got["Metadata"]["prompt-sha256"]) == 64
        assert int(got["Metadata"]["seed"]) > 0

    # AND the ledger has one record per image, and their sum is the summary total exactly
    records = list(aws.ledger().image_records(batch_id))
    assert len(records) == 20
    assert all(type(r["cost_micro_usd"]) is int for r in records)
    assert sum(r["cost_micro_usd"] for r in records) == summary["cost_micro_usd"] == 20 * price
    assert summary["images_succeeded"] == 20 and summary["images_failed"] == 0
    assert summary["chunk_commits"] == 4  # 20 images in chunks of 6: one commit per chunk
    assert aws.bedrock.stats.images_returned - returned_before == 20
    report = json.loads(
        s3.get_object(Bucket=aws.bucket, Key=f"reports/{batch_id}/summary.json")["Body"].read()
    )
    assert report["status"] == "SUCCEEDED" and report["cost_micro_usd"] == 20 * price

    # WHEN the same manifest is uploaded again, once the execution (the contact sheet, which
    # charges itself to the batch, last) has ended
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
    summary = aws.ledger().get_batch(batch_id) or {}
    calls_before = _ingest_calls(aws)
    invocations_before = aws.bedrock.stats.invocations
    assert aws.upload_manifest(manifest) == batch_id
    deadline = time.monotonic() + 60
    while _ingest_calls(aws) == calls_before and time.monotonic() < deadline:
        time.sleep(0.1)

    # THEN nothing is generated or charged twice
    assert _ingest_calls(aws) == calls_before + 1
    time.sleep(1)
    assert aws.bedrock.stats.invocations == invocations_before
    assert aws.ledger().get_batch(batch_id) == summary
    assert len(_output_objects(aws, batch_id)) == 20
    executions = aws.sfn().list_executions(stateMachineArn=aws.state_machine_arn)["executions"]
    assert [e["name"] for e in executions].count(batch_id) == 1


def test_an_invalid_line_rejects_the_batch_and_is_reported(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN a manifest whose third line has a size the model cannot make
    items = _items(3, prefix="rej")
    items[1].update(width=100, height=64)
    manifest = _write_manifest(tmp_path / "reject.jsonl", items, on_invalid="reject")

    # WHEN it is uploaded
    batch_id = aws.upload_manifest(manifest)
    summary = aws.wait_for_batch(batch_id, timeout_s=60)

    # THEN nothing runs and errors.jsonl names the line and the field
    assert summary["status"] == "REJECTED"
    assert _output_objects(aws, batch_id) == []
    body = aws.s3().get_object(Bucket=aws.bucket, Key=f"reports/{batch_id}/errors.jsonl")
    errors = [json.loads(line) for line in body["Body"].read().splitlines()]
    assert {(e["line"], e["field"]) for e in errors} >= {(3, "width")}


def test_refused_images_are_recorded_with_their_class(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN 6 items of which 2 the local Bedrock refuses as content-filtered
    items = _items(6, prefix="flt")
    items[2]["prompt"] += " [[filtered]]"
    items[4]["prompt"] += " [[filtered]]"
    manifest = _write_manifest(tmp_path / "filtered.jsonl", items)
    price = load_catalogue().get(MODEL).price().micro_usd_per_image  # type: ignore[union-attr]

    # WHEN it runs
    batch_id = aws.upload_manifest(manifest)
    summary = aws.wait_for_batch(batch_id, timeout_s=120)

    # THEN the batch is PARTIAL, only returned images are charged, refusals are reported
    assert summary["status"] == "PARTIAL"
    assert summary["images_succeeded"] == 4 and summary["images_failed"] == 2
    assert summary["cost_micro_usd"] == 4 * price
    s3 = aws.s3()
    failed = [
        json.loads(line)
        for line in s3.get_object(Bucket=aws.bucket, Key=f"reports/{batch_id}/failed.jsonl")["Body"]
        .read()
        .splitlines()
    ]
    assert {(f["image_id"], f["failure_class"]) for f in failed} == {
        ("flt-02-1", "content_filtered"),
        ("flt-04-1", "content_filtered"),
    }
    redrive = s3.get_object(Bucket=aws.bucket, Key=f"reports/{batch_id}/redrive.jsonl")
    lines = [json.loads(line) for line in redrive["Body"].read().splitlines()]
    assert "batch" in lines[0]
    assert sorted(item["id"] for item in lines[1:]) == ["flt-02-1", "flt-04-1"]
    # its contact sheet runs after the status is final: let it end before the next test counts
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"


def _invocations(aws: LocalAws) -> Counter[str]:
    """Invocations that reached their ledger commit (a ChunkUnfinished attempt commits first;
    an invocation that died before its commit records nothing, a known gap)."""
    return Counter(
        call.function.rsplit("-", 1)[-1]
        for call in aws.runtime.invocations
        if not call.errored or call.error_type == "ChunkUnfinished"
    )


def test_counted_operations_match_the_execution_and_the_estimate(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN an 8-item manifest (two chunks of at most 6)
    manifest = _write_manifest(tmp_path / "counted.jsonl", _items(8, prefix="cnt"))
    before = _invocations(aws)

    # WHEN it runs
    batch_id = aws.upload_manifest(manifest)
    aws.wait_for_batch(batch_id, timeout_s=120)
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
    calls = _invocations(aws) - before
    # The contact sheet, last, charges itself to the batch: read the summary after it ran.
    assert calls["ContactSheetFunction"] == 1
    summary = aws.ledger().get_batch(batch_id)
    assert summary is not None

    # THEN the transitions the ledger counted are the ones Step Functions recorded: the
    # parent execution's entered states, plus one per chunk attempt in the child executions
    assert summary["status"] == "SUCCEEDED"
    sfn = aws.sfn()
    events = sfn.get_execution_history(executionArn=aws.execution_arn(batch_id), maxResults=1000)[
        "events"
    ]
    entered = [e for e in events if e["type"].endswith("StateEntered")]
    map_run = sfn.list_map_runs(executionArn=aws.execution_arn(batch_id))["mapRuns"][0]
    children = sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])["executionCounts"]
    assert len(entered) == BATCH_TRANSITIONS.batch
    assert children["total"] == summary["chunks_total"] == 2
    retries = calls["GenerateChunkFunction"] - children["total"]
    assert summary["use_sfn_transitions"] == (
        len(entered) + children["total"] * BATCH_TRANSITIONS.chunk_attempt + retries
    )
    # AND every Lambda invocation recorded itself (ingest, each chunk attempt, finalize),
    # with the template's memory
    assert summary["use_lambda_requests"] == sum(calls.values())
    assert calls["IngestFunction"] == calls["FinalizeFunction"] == 1
    memory = {f.logical_id: f.memory_mb for f in aws.stack.functions}
    assert summary["use_lambda_mb_ms"] >= sum(memory[name] * 1 for name in calls)
    # AND one PUT per image, per chunk file, the index, the report
    assert summary["use_s3_put_requests"] >= 8 + 2 + 1 + 1

    # AND the estimate made at ingest is within 5% of what the ledger charged
    costs = summary_costs(summary, load_aws_prices().region("us-east-1")).rounded()
    assert abs(summary["estimate_micro_usd"] - costs["total"]) <= 0.05 * costs["total"]
    # AND so is `imagebatch estimate`'s figure for this model
    option = bedrock_options(
        [MODEL], load_catalogue(), load_aws_prices().region("us-east-1"), Shape(chunk_size=6)
    )[0]
    assert abs(option.cost_micro_usd(8) - costs["total"]) <= 0.05 * costs["total"]

    # AND the day rollups sum to what the batch was charged, the contact sheet included
    rollups = list(aws.ledger().query_batch(batch_id, "DAY#"))
    assert sum(r["spent_micro_usd"] for r in rollups) == summary["spent_micro_usd"]


def test_a_batch_over_its_cap_is_refused_before_anything_is_spent(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN 20 images at $0.08 with a $1 cap
    manifest = _write_manifest(tmp_path / "capped.jsonl", _items(20, prefix="cap"), max_cost_usd=1)
    invocations_before = aws.bedrock.stats.invocations

    # WHEN it is uploaded
    batch_id = aws.upload_manifest(manifest)
    summary = aws.wait_for_batch(batch_id, timeout_s=60)

    # THEN it is rejected with the estimate in the message, and nothing was generated
    assert summary["status"] == "REJECTED"
    assert "estimated cost $1.60" in summary["rejection"]
    assert "exceeds max_cost_usd $1" in summary["rejection"]
    assert aws.bedrock.stats.invocations == invocations_before


def test_a_chunk_the_budget_cannot_hold_is_recorded_budget_exhausted(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN 6 images whose estimate fits a $0.482 cap, while the chunk's hold (its images
    # plus its Lambda at the full 600 s timeout) does not
    manifest = _write_manifest(
        tmp_path / "tight.jsonl", _items(6, prefix="tight"), max_cost_usd="0.482"
    )
    invocations_before = aws.bedrock.stats.invocations

    # WHEN it runs
    batch_id = aws.upload_manifest(manifest)
    aws.wait_for_batch(batch_id, timeout_s=120)
    # the contact sheet, after the final status, holds budget first: read once it has settled
    aws.wait_for_execution(batch_id)
    summary = aws.ledger().get_batch(batch_id) or {}

    # THEN nothing is generated, every image is budget_exhausted, spend stays under the cap
    # and the redrive manifest holds all six
    assert summary["status"] == "FAILED"
    assert aws.bedrock.stats.invocations == invocations_before
    assert summary["failures_by_class"] == {"budget_exhausted": 6}
    assert 0 < summary["spent_micro_usd"] <= summary["max_cost_micro_usd"] == 482_000
    assert summary["reserved_micro_usd"] == 0
    redrive = aws.s3().get_object(Bucket=aws.bucket, Key=f"reports/{batch_id}/redrive.jsonl")
    lines = [json.loads(line) for line in redrive["Body"].read().splitlines()]
    assert len(lines) == 7 and lines[0]["batch"]["max_cost_usd"] == "0.482"
