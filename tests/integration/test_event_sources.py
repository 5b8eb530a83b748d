"""The local SQS event source mapping: batches, partial failures, redrive to the DLQ."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from imagebatch_local.cloud.event_sources import SqsEventSourcePoller, SqsSource, sqs_event


class FakeRuntime:
    """Records events; fails the records whose body says so, as a batch item failure."""

    def __init__(self, *, crash: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.crash = crash

    def invoke(self, function_name: str, event: Any) -> tuple[str, bool]:
        self.events.append(event)
        if self.crash:
            return json.dumps({"errorType": "RuntimeError", "errorMessage": "boom"}), True
        failures = [
            {"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "bad"
        ]
        return json.dumps({"batchItemFailures": failures}), False


@pytest.fixture
def sqs(aws: None) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def _queue(sqs: Any, name: str, **attributes: str) -> str:
    url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def test_event_has_the_lambda_sqs_record_shape() -> None:
    event = sqs_event(
        [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "hello"}],
        "arn:aws:sqs:us-east-1:123456789012:q",
    )
    record = event["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["md5OfBody"] == "5d41402abc4b2a76b9719d911017c592"
    assert record["body"] == "hello"


def test_reported_failures_stay_and_the_rest_are_deleted(sqs: Any) -> None:
    url = _queue(sqs, "results", VisibilityTimeout="0")
    for body in ("good-1", "bad", "good-2"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    runtime = FakeRuntime()
    poller = SqsEventSourcePoller(runtime, [], "unused")  # type: ignore[arg-type]
    source = SqsSource("fn", url, batch_size=10, report_batch_item_failures=True)
    deleted = poller.poll_once(sqs, source)
    assert deleted == 2
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in left] == ["bad"]


def test_a_crashed_invocation_keeps_the_whole_batch(sqs: Any) -> None:
    url = _queue(sqs, "results", VisibilityTimeout="0")
    sqs.send_message(QueueUrl=url, MessageBody="good")
    poller = SqsEventSourcePoller(FakeRuntime(crash=True), [], "unused")  # type: ignore[arg-type]
    assert poller.poll_once(sqs, SqsSource("fn", url, 10, True)) == 0
    assert poller.errors
    assert len(sqs.receive_message(QueueUrl=url)["Messages"]) == 1


def test_a_message_that_keeps_failing_moves_to_the_dead_letter_queue(sqs: Any) -> None:
    dlq = _queue(sqs, "dlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = _queue(
        sqs,
        "results",
        VisibilityTimeout="0",
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    )
    sqs.send_message(QueueUrl=url, MessageBody="bad")
    poller = SqsEventSourcePoller(FakeRuntime(), [], "unused")  # type: ignore[arg-type]
    source = SqsSource("fn", url, 10, True)
    for _ in range(3):
        poller.poll_once(sqs, source)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=dlq)["Messages"]] == ["bad"]
