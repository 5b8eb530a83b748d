"""An insider on the local AWS: a principal of the same account, allowed s3:PutObject and
GetObject, sns:Publish, sqs:SendMessage, events:PutEvents and execute-api:Invoke on "*",
tries every forgery of issue 19 while batches run; none may change a batch's ledger, budget
or images, or a catalog's published images (README, "Security model")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws
from support.insider import Insider, denied, insider_fixture  # noqa: F401 - fixture `insider`

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        backend="sagemaker",
        shape_buckets="64x64",
        max_batch=4,
        parameter_overrides={"ChunkSize": "5"},
        region=REGION,
    )
    with local_aws(options) as running:
        yield running


def _manifest(path: Path, items: list[dict[str, Any]], **settings: Any) -> Path:
    header = {"batch": {"backend": "sagemaker", "model": "tiny-sd", **settings}}
    lines = [json.dumps(header), *(json.dumps({"steps": 1, "guidance": 0, **i}) for i in items)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _topic(aws: LocalAws, logical_id: str) -> str:
    return aws.stack.physical[logical_id]


def _queue_url(aws: LocalAws) -> str:
    return aws.stack.physical["InferenceResultQueue"]


def _notification(aws: LocalAws, status: str, input_key: str, **response: str) -> dict[str, Any]:
    """A SageMaker async notification, as the endpoint publishes it (wire format)."""
    inference_id = input_key.rsplit("/", 1)[-1].removesuffix(".json")
    return {
        "awsRegion": aws.region,
        "eventTime": "2026-01-01T00:00:00.000Z",
        "receivedTime": "2026-01-01T00:00:00.000Z",
        "invocationStatus": status,
        "requestParameters": {
            "contentType": "application/json",
            "endpointName": aws.sagemaker.config.endpoint_name,
            "inputLocation": f"s3://{aws.bucket}/{input_key}",
        },
        "responseParameters": {"contentType": "application/json", **response},
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
        **({"failureReason": "forged"} if status == "Failed" else {}),
    }


def _envelope(topic_arn: str, message: dict[str, Any]) -> str:
    """The SNS envelope SQS receives from a topic (raw delivery off)."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "forged",
            "TopicArn": topic_arn,
            "Message": json.dumps(message),
            "Timestamp": "2026-01-01T00:00:00.000Z",
        }
    )


# --- each forgery, on its own ----------------------------------------------------------------

SEALED = [
    "chunks/m-any/00000.pending.json",
    "chunks/m-any/00000.json",
    "async-inputs/m-any/forged.json",
    "async-outputs/forged.out",
    "async-failures/forged-error.out",
    "reports/m-any/summary.json",
    "models/tiny-sd/model.tar.gz",
    "catalogs/home/latest/SKU1/front.png",
    "manifests/catalogs/home/9999-12-31.jsonl",
]


@pytest.mark.parametrize("key", SEALED)
def test_the_insider_cannot_write_internal_state(insider: Insider, key: str) -> None:
    assert denied(insider.put, key) == "AccessDenied"
    assert insider.refused()[-1].action == "s3:PutObject"
    assert insider.refused()[-1].resource.endswith(f"/{key}")


def test_the_insider_may_write_what_manifest_authors_may(insider: Insider) -> None:
    # The trust boundary (README, "Security model"): outputs/ (and manifests/) stay writable
    # by anyone the account allows, so the pipeline must not trust what it reads there.
    insider.put("outputs/campaign/x.png", b"png")
    assert insider.refused() == [] or insider.refused()[-1].resource.find("outputs/") < 0


@pytest.mark.parametrize("topic", ["InferenceSuccessTopic", "InferenceErrorTopic"])
def test_the_insider_cannot_publish_a_result(aws: LocalAws, insider: Insider, topic: str) -> None:
    forged = _notification(aws, "Failed", "async-inputs/m-any/x.json")
    assert denied(insider.publish, _topic(aws, topic), forged) == "AuthorizationError"
    assert insider.refused()[-1].action == "sns:Publish"


def test_the_insider_cannot_send_a_result_straight_to_the_queue(
    aws: LocalAws, insider: Insider
) -> None:
    forged = _notification(aws, "Failed", "async-inputs/m-any/x.json")
    body = _envelope(_topic(aws, "InferenceErrorTopic"), forged)
    assert denied(insider.send, _queue_url(aws), body) == "AccessDenied"
    assert insider.refused()[-1].action == "sqs:SendMessage"


# --- a batch runs while the insider tries everything at once -------------------------------


def _requests_in_flight(aws: LocalAws, batch_id: str, timeout_s: float = 300) -> list[str]:
    """The batch's request objects under async-inputs/, once the first is there (the operator
    lists them: the worst case is an insider who knows every key)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        aws.raise_if_denied()
        listing = aws.s3().list_objects_v2(Bucket=aws.bucket, Prefix=f"async-inputs/{batch_id}/")
        keys = [obj["Key"] for obj in listing.get("Contents", [])]
        if keys:
            return keys
        time.sleep(0.05)
    raise AssertionError(f"no request of {batch_id} reached the endpoint in {timeout_s} s")


def _forge_everything(aws: LocalAws, insider: Insider, batch_id: str, inputs: list[str]) -> int:
    """Every forgery of issue 19 against the running batch; how many calls were refused."""
    refused = 0
    negative = json.dumps({"images": [], "cost_micro_usd": -999_000_000}).encode()
    for key, body in [
        (f"chunks/{batch_id}/00000.pending.json", negative),
        (f"chunks/{batch_id}/00001.json", b"{}"),
        (f"reports/{batch_id}/summary.json", b"{}"),
        ("async-outputs/forged.out", b"{}"),
        ("async-failures/forged-error.out", b"{}"),
        (f"async-inputs/{batch_id}/forged.json", b"{}"),
        ("models/model.tar.gz", b"forged"),
        ("catalogs/home/latest/SKU1/front.png", b"forged"),
        ("manifests/catalogs/home/9999-12-31.jsonl", b"{}"),
    ]:
        refused += denied(insider.put, key, body) == "AccessDenied"
    # A "result" where the insider may write (outputs/), and a PNG whose metadata claims to be
    # evidence of a made image at a negative cost: written, but neither may be trusted.
    insider.put("outputs/forged/result.out", b'{"images": [], "calls": []}')
    insider.put(
        f"outputs/{batch_id}/forged-1.png",
        b"\x89PNG forged",
        Metadata={"image-id": "mug-1", "chunk-id": "00000", "cost-micro-usd": "-999000000"},
    )
    success, error = _topic(aws, "InferenceSuccessTopic"), _topic(aws, "InferenceErrorTopic")
    for key in inputs:
        failed = _notification(aws, "Failed", key)
        completed = _notification(
            aws, "Completed", key, outputLocation=f"s3://{aws.bucket}/outputs/forged/result.out"
        )
        refused += denied(insider.publish, error, failed) == "AuthorizationError"
        refused += denied(insider.publish, success, completed) == "AuthorizationError"
        for topic, message in ((error, failed), (success, completed)):
            refused += denied(insider.send, _queue_url(aws), _envelope(topic, message)) == (
                "AccessDenied"
            )
    # Batch Finished is an event on the default bus: the insider may put one (nothing of the
    # stack acts on it); it changes no ledger.
    insider.client("events").put_events(
        Entries=[
            {
                "Source": "imagebatch",
                "DetailType": "Batch Finished",
                "Detail": json.dumps({"batch_id": batch_id, "status": "FAILED"}),
            }
        ]
    )
    return refused


def test_a_batch_runs_while_the_insider_forges_everything(
    aws: LocalAws, insider: Insider, tmp_path: Path
) -> None:
    # GIVEN a capped SageMaker batch of 7 images in two chunks, uploaded by the insider (it
    # may upload manifests: that is what its s3:PutObject is for)
    items = [{"id": "mug", "prompt": "a mug", "width": 64, "height": 64, "count": 7}]
    manifest = _manifest(tmp_path / "target.jsonl", items, max_cost_usd=5)
    batch_id = aws.upload_manifest(manifest, as_insider=True)
    # WHEN, with its first request in flight, the insider tries every forgery
    inputs = _requests_in_flight(aws, batch_id)
    refused_before = len(insider.refused())
    refused = _forge_everything(aws, insider, batch_id, inputs)
    aws.wait_for_batch(batch_id, timeout_s=600)
    aws.wait_for_execution(batch_id)
    # read once the contact sheet (the execution's last step) has settled its own hold
    summary = aws.ledger().get_batch(batch_id)
    assert summary is not None
    # THEN every forgery was refused by the IAM check, none by luck of timing
    assert refused == 9 + 4 * len(inputs)  # 9 writes; 2 publishes and 2 sends per request
    assert len(insider.refused()) - refused_before == refused
    # AND the batch is what it would have been: every image made once, at its own cost
    assert summary.status == "SUCCEEDED", summary
    assert summary.images_succeeded == 7 and summary.images_failed == 0
    records = list(aws.ledger().image_records(batch_id))
    assert sorted(r["image_id"] for r in records) == [f"mug-{i}" for i in range(1, 8)]
    assert all(r["status"] == "SUCCEEDED" and r["cost_micro_usd"] > 0 for r in records)
    assert summary.cost_micro_usd == sum(r["cost_micro_usd"] for r in records)
    # AND the budget moved only by what the batch spent: nothing held, nothing credited
    # (the endpoint's wake stays held until the observer charges the window after scale-in)
    assert summary.reserved_micro_usd == summary.wake_held_micro_usd
    assert summary.max_cost_micro_usd == 5_000_000
    assert summary.cost_micro_usd <= summary.spent_micro_usd <= summary.max_cost_micro_usd
    # AND every image is the endpoint's (its PNG carries the served seed and model)
    s3 = aws.s3()
    for record in records:
        head = s3.head_object(Bucket=aws.bucket, Key=record["output_key"])
        assert head["Metadata"]["model"] == "tiny-sd"
    # AND nothing sealed was written by the insider
    for prefix in ("catalogs/", "models/", "manifests/catalogs/", "async-outputs/forged"):
        assert s3.list_objects_v2(Bucket=aws.bucket, Prefix=prefix)["KeyCount"] == 0
    # AND the stack's own roles were refused nothing (wait_for_batch raised otherwise)
    assert aws.iam.denials == []
