"""The whole pipeline through the local AWS: template, handlers, state machine, local model."""

from __future__ import annotations

import io
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.session import LocalAws, LocalOptions, LocalRunError, local_aws
from imagebatch_local.cloud.sfn_limits import PAYLOAD_LIMIT_BYTES, collected_result_size
from imagebatch_local.template import load_template
from PIL import Image
from support.ledger_summary import as_item

from imagebatch.aws.batch_items import record_from_plain
from imagebatch.costs.estimate import Shape, bedrock_options
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import summary_costs
from imagebatch.models.bedrock_models import load_catalogue

pytestmark = pytest.mark.e2e

MODEL = "stability.sd3-5-large-v1:0"
REPO = Path(__file__).resolve().parents[2]
# ARNs, bucket names and prices follow the stack's region. The suite's model, SD3.5 Large, is
# offered in us-west-2 only (data/bedrock_models.json) and the models the catalogue records in
# other regions are past their end of life, so this suite runs in the deploy region; the
# SageMaker suite (test_sagemaker_pipeline.py) runs the stack in us-east-1.
REGIONS = ["us-west-2"]


@pytest.fixture(scope="module", params=REGIONS)
def aws(request: pytest.FixtureRequest) -> Iterator[LocalAws]:
    region: str = request.param
    if region not in load_aws_prices().regions:
        # The handlers price with the region's prices and refuse a region without them.
        pytest.skip(f"src/imagebatch/data/aws_prices.json has no prices for {region} yet")
    options = LocalOptions(
        template=REPO / "template.yaml", parameter_overrides={"ChunkSize": "6"}, region=region
    )
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


def _wait_until_no_execution_runs(aws: LocalAws, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = aws.sfn().list_executions(
            stateMachineArn=aws.state_machine_arn, statusFilter="RUNNING"
        )["executions"]
        if not running:
            return
        time.sleep(0.1)
    raise AssertionError(f"executions still running after {timeout_s} s")


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
    summary = as_item(aws.wait_for_batch(batch_id, timeout_s=300))

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
    summary = as_item(aws.ledger().get_batch(batch_id)) or {}
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
    assert as_item(aws.ledger().get_batch(batch_id)) == summary
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
    summary = as_item(aws.wait_for_batch(batch_id, timeout_s=60))

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
    summary = as_item(aws.wait_for_batch(batch_id, timeout_s=120))

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
    # GIVEN an 8-item manifest (two chunks of at most 6), and no earlier batch's execution
    # still running (its finalize returns after the batch is settled: hooks run then)
    manifest = _write_manifest(tmp_path / "counted.jsonl", _items(8, prefix="cnt"))
    _wait_until_no_execution_runs(aws)
    before = _invocations(aws)

    # WHEN it runs
    batch_id = aws.upload_manifest(manifest)
    as_item(aws.wait_for_batch(batch_id, timeout_s=120))
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
    calls = _invocations(aws) - before
    # The contact sheet, last, charges itself to the batch: read the summary after it ran.
    assert calls["ContactSheetFunction"] == 1
    summary = as_item(aws.ledger().get_batch(batch_id))
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
    costs = summary_costs(
        record_from_plain(summary), load_aws_prices().region(aws.region)
    ).rounded()
    assert abs(summary["estimate_micro_usd"] - costs["total"]) <= 0.05 * costs["total"]
    # AND so is `imagebatch estimate`'s figure for this model
    option = bedrock_options(
        [MODEL], load_catalogue(), load_aws_prices().region(aws.region), Shape(chunk_size=6)
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
    summary = as_item(aws.wait_for_batch(batch_id, timeout_s=60))

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
    as_item(aws.wait_for_batch(batch_id, timeout_s=120))
    # the contact sheet, after the final status, holds budget first: read once it has settled
    aws.wait_for_execution(batch_id)
    summary = as_item(aws.ledger().get_batch(batch_id)) or {}

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


def test_any_name_validate_accepts_runs_and_any_other_is_refused_at_once(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN the same two-item manifest saved as .NDJSON (valid) and as .txt (not a manifest)
    valid = _write_manifest(tmp_path / "upper.NDJSON", _items(2, prefix="nd"))
    other = tmp_path / "notes.txt"
    other.write_bytes(valid.read_bytes())

    # WHEN both are dropped under manifests/
    ran = as_item(aws.wait_for_batch(aws.upload_manifest(valid), timeout_s=120))
    started = time.monotonic()
    refused_id = aws.upload_manifest(other)
    refused = as_item(aws.wait_for_batch(refused_id, timeout_s=60))

    # THEN the .NDJSON one runs, and the .txt one is refused within seconds, with the reason
    # in the batch record and in its errors report
    assert ran["status"] == "SUCCEEDED" and ran["images_succeeded"] == 2
    assert refused["status"] == "REJECTED" and time.monotonic() - started < 60
    assert "'.txt'" in refused["rejection"] and ".ndjson" in refused["rejection"]
    body = aws.s3().get_object(Bucket=aws.bucket, Key=f"reports/{refused_id}/errors.jsonl")
    assert "'.txt'" in json.loads(body["Body"].read().splitlines()[0])["reason"]

    # AND a folder marker under manifests/ starts nothing and fails nothing
    calls_before = _ingest_calls(aws)
    aws.s3().put_object(Bucket=aws.bucket, Key="manifests/incoming/", Body=b"")
    deadline = time.monotonic() + 30
    while _ingest_calls(aws) == calls_before and time.monotonic() < deadline:
        time.sleep(0.1)
    as_item(aws.wait_for_batch(refused_id, timeout_s=5))  # raises if any ingest invocation failed


def test_the_stack_lives_in_its_region(aws: LocalAws) -> None:
    # The bucket, the table, the state machine and the ledger's view of prices are regional.
    # named from the account and the stack id's UUID (template.yaml DataBucket)
    stack_uuid = aws.stack.pseudo("AWS::StackId").rsplit("/", 1)[-1]
    assert aws.stack.pseudo("AWS::StackId").startswith(f"arn:aws:cloudformation:{aws.region}:")
    assert aws.bucket == f"imagebatch-123456789012-{stack_uuid}"
    assert aws.s3().get_bucket_location(Bucket=aws.bucket).get("LocationConstraint") == (
        None if aws.region == "us-east-1" else aws.region
    )
    assert aws.state_machine_arn.startswith(f"arn:aws:states:{aws.region}:123456789012:")
    assert aws.stack.arns["LedgerTable"].startswith(f"arn:aws:dynamodb:{aws.region}:")


def test_the_distributed_maps_result_for_200000_images_fits(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN a batch of two chunks through the Distributed Map
    manifest = _write_manifest(tmp_path / "map.jsonl", _items(8, prefix="map"))

    # WHEN it runs
    batch_id = aws.upload_manifest(manifest)
    as_item(aws.wait_for_batch(batch_id, timeout_s=120))
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"

    # THEN the local check saw every state of the parent and of each child within the limits
    execution = aws.execution_arn(batch_id)
    assert aws.limit_violations(execution) == []
    (run,) = [r for r in aws.map_runs.values() if r.execution_arn == execution]
    assert {
        e["stateEnteredEventDetails"]["name"] for e in run.events if "Entered" in e["type"]
    } >= {
        "ChooseBackend",
        "GenerateChunk",
    }
    # AND what the Map collects is one output per child, each as large as the largest seen
    assert len(run.result or []) == 2
    largest = max(run.result or [], key=lambda output: collected_result_size([output]))
    # AND for 200,000 images at the template's default chunk size, that array fits 256 KiB
    chunk_size = int(load_template(REPO / "template.yaml")["Parameters"]["ChunkSize"]["Default"])
    chunks = math.ceil(200_000 / chunk_size)
    assert chunks == 4_000
    assert collected_result_size([largest] * chunks) <= PAYLOAD_LIMIT_BYTES


def test_a_run_whose_map_result_crosses_256_kib_fails(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN a batch that ran, whose Map run is then made to have collected 300 KB of outputs
    manifest = _write_manifest(tmp_path / "limit.jsonl", _items(2, prefix="lim"))
    batch_id = aws.upload_manifest(manifest)
    as_item(aws.wait_for_batch(batch_id, timeout_s=120))
    execution = aws.execution_arn(batch_id)
    (arn,) = [arn for arn, run in aws.map_runs.items() if run.execution_arn == execution]
    real = aws.map_runs[arn]
    aws.map_runs[arn] = replace(real, result=[{"blob": "x" * 100_000}] * 3)

    # WHEN the run waits for the execution to end
    try:
        with pytest.raises(LocalRunError) as crossed:
            aws.wait_for_execution(batch_id)
    finally:
        aws.map_runs[arn] = real

    # THEN it fails, naming the execution, the Map run and the size
    assert "Step Functions limit crossed" in str(crossed.value)
    assert "the Map's collected result is 300," in str(crossed.value)
    assert real.map_run_arn in str(crossed.value)


def test_an_overwritten_manifest_runs_each_version_it_was_uploaded_as(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN the data bucket as the template makes it (VersioningConfiguration: Enabled)
    s3 = aws.s3()
    assert s3.get_bucket_versioning(Bucket=aws.bucket).get("Status") == "Enabled"
    key = "manifests/overwritten.jsonl"
    first = _write_manifest(tmp_path / "v1.jsonl", _items(2, "v1"), max_cost_usd=2)
    second = _write_manifest(tmp_path / "v2.jsonl", _items(3, "v2"), max_cost_usd=2)

    # WHEN one key is uploaded, then overwritten with other content
    batches = []
    for path in (first, second):
        batch_id = aws.upload_manifest(path, key)
        version = s3.head_object(Bucket=aws.bucket, Key=key)["VersionId"]
        batches.append((batch_id, version))

    # THEN each upload ran as its own batch, from the version its event named
    for (batch_id, version), images in zip(batches, (2, 3), strict=True):
        summary = aws.wait_for_batch(batch_id, timeout_s=300)
        assert summary.status == "SUCCEEDED"
        assert (summary.manifest_version_id, summary.images_total) == (version, images)
