"""An insider on the local AWS: a principal of the same account, allowed s3:PutObject and
GetObject, sns:Publish, sqs:SendMessage, events:PutEvents and execute-api:Invoke on "*",
tries every forgery of issue 19 while batches run; none may change a batch's ledger, budget
or images, or a catalog's published images (README, "Security model")."""

from __future__ import annotations

import json
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
