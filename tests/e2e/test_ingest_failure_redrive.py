"""An ingest that failed every attempt is not lost: Lambda sends its event, in the documented
invocation record, to IngestFailureQueue (template.yaml's EventInvokeConfig), and
`imagebatch redrive-ingest` starts the batch from it, once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError
from imagebatch_cli.app import app
from imagebatch_local.cloud.chaos import ChaosSpec
from imagebatch_local.cloud.local_up import descriptor_for
from imagebatch_local.cloud.session import LocalAws, LocalOptions, LocalRunError, local_aws
from imagebatch_local.stack_descriptor import write_descriptor
from support.chaos import chaos_of
from support.cli import CLOSED_PORT_URL, clean
from typer.testing import CliRunner

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODEL = "stability.sd3-5-large-v1:0"


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        renderer="null",
        chaos=ChaosSpec(0, 0.0),  # no fault but the one each test scripts
        parameter_overrides={"ChunkSize": "2"},
    )
    with local_aws(options) as running:
        yield running


def _manifest(path: Path, n: int) -> Path:
    lines: list[dict[str, Any]] = [
        {"batch": {"backend": "bedrock", "model": MODEL, "max_cost_usd": 5}}
    ]
    lines += [{"id": f"redrive-ingest-{i}", "prompt": f"a kettle, {i}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def _executions(aws: LocalAws, batch_id: str) -> list[str]:
    found = aws.sfn().list_executions(stateMachineArn=aws.state_machine_arn)["executions"]
    return sorted(e["name"] for e in found if e["name"].startswith(batch_id))


def _messages(aws: LocalAws, queue_url: str) -> list[dict[str, Any]]:
    # visibility 0: looking does not hide them from the redrive that follows
    received = aws.client("sqs").receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    return [json.loads(m["Body"]) for m in received.get("Messages", [])]


def test_an_ingest_that_failed_every_attempt_is_queued_then_redriven_once(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN ingest killed at its first AWS call on each of its three attempts
    chaos_of(aws).script("IngestFunction/", "killed-before", times=3)
    queue_url = aws.stack.physical["IngestFailureQueue"]

    # WHEN a manifest is uploaded
    batch_id = aws.upload_manifest(_manifest(tmp_path / "kettles.jsonl", 3))
    with pytest.raises(LocalRunError, match="ingest failed"):
        aws.wait_for_batch(batch_id, timeout_s=300)

    # THEN nothing started, and the event waits on the queue in Lambda's invocation record
    assert _executions(aws, batch_id) == []
    # sent with ingest's own role, as Lambda sends a destination record
    assert ("IngestFunction", "sqs:SendMessage") in aws.iam.allowed
    (record,) = _messages(aws, queue_url)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    ingest_arn = aws.stack.arns["IngestFunction"]
    assert record["requestContext"]["functionArn"] == f"{ingest_arn}:$LATEST"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"]
    (s3_record,) = record["requestPayload"]["Records"]
    # S3 events carry the key URL-encoded
    assert unquote_plus(s3_record["s3"]["object"]["key"]) == "manifests/kettles.jsonl"

    # WHEN the operator redrives the queue (twice: the second finds nothing)
    from imagebatch_cli.commands.redrive_ingest import redrive_failed_ingests

    from imagebatch.aws.ingest_failures import IngestFailureQueue, IngestInvoker

    queue = IngestFailureQueue(aws.client("sqs"), queue_url)
    invoker = IngestInvoker(aws.client("lambda"), aws.stack.physical["IngestFunction"])
    first = redrive_failed_ingests(queue, invoker)
    second = redrive_failed_ingests(queue, invoker)

    # THEN the batch ran, started once, and the queue is empty
    summary = aws.wait_for_batch(batch_id, timeout_s=300)
    assert summary.status == "SUCCEEDED"
    assert summary.images_succeeded == 3
    assert (first.redriven, first.kept) == (1, [])
    assert (second.redriven, second.kept) == (0, [])
    assert _executions(aws, batch_id) == [batch_id]
    assert _messages(aws, queue_url) == []


def test_a_redrive_whose_ingest_fails_again_keeps_the_message(
    aws: LocalAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an ingest that failed every attempt, and fails once more when redriven
    chaos_of(aws).script("IngestFunction/", "killed-before", times=4)
    queue_url = aws.stack.physical["IngestFailureQueue"]
    batch_id = aws.upload_manifest(_manifest(tmp_path / "teapots.jsonl", 2))
    with pytest.raises(LocalRunError, match="ingest failed"):
        aws.wait_for_batch(batch_id, timeout_s=300)

    from imagebatch_cli.commands.redrive_ingest import redrive_failed_ingests

    from imagebatch.aws.ingest_failures import IngestFailureQueue, IngestInvoker

    queue = IngestFailureQueue(aws.client("sqs"), queue_url)
    invoker = IngestInvoker(aws.client("lambda"), aws.stack.physical["IngestFunction"])

    # WHEN it is redriven: a synchronous invoke, which Lambda does not retry
    failed = redrive_failed_ingests(queue, invoker)

    # THEN the message stays for the next redrive, with nothing new beside it
    assert failed.redriven == 0
    assert len(failed.kept) == 1
    assert "manifests/teapots.jsonl" in failed.kept[0]
    assert len(_messages(aws, queue_url)) == 1
    assert _executions(aws, batch_id) == []

    # AND the next redrive, the command against `local up`'s stack, starts it
    run_dir = tmp_path / "run"
    write_descriptor(descriptor_for(aws, CLOSED_PORT_URL), run_dir)
    monkeypatch.setenv("IMAGEBATCH_RUN_DIR", str(run_dir))
    result = CliRunner().invoke(app, ["redrive-ingest", "--stack", "local"])
    assert "ingested again: s3://" in clean(result, 0)
    assert "1 failed ingest(s) redriven" in result.output
    assert aws.wait_for_batch(batch_id, timeout_s=300).status == "SUCCEEDED"
    assert _executions(aws, batch_id) == [batch_id]


def test_no_one_but_ingest_puts_a_record_on_the_queue(aws: LocalAws) -> None:
    # A record there is replayed through ingest by the operator: an insider allowed
    # sqs:SendMessage on "*" must not queue one (forged, or an old event replayed).
    queue_url = aws.stack.physical["IngestFailureQueue"]
    insider = aws.insider_client("sqs")
    with pytest.raises(ClientError) as refused:
        insider.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"forged": True}))
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert _messages(aws, queue_url) == []
