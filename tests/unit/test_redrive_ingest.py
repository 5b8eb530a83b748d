"""`imagebatch redrive-ingest`'s loop (the e2e runs it against the local AWS): a message goes
only once ingest accepted its event, and the first failure stops the redrive with that message
and the rest visible again."""

from __future__ import annotations

import json
from typing import Any

from imagebatch_cli.commands.redrive_ingest import redrive_failed_ingests

from imagebatch.models.invocation_record import FailedIngest, InvocationRecord


def _record(key: str) -> str:
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": "2026-12-07T22:00:00.000Z",
            "requestContext": {
                "requestId": "r-1",
                "functionArn": "arn:aws:lambda:us-west-2:123456789012:function:ingest:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": {
                "Records": [{"s3": {"bucket": {"name": "data"}, "object": {"key": key}}}]
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {"errorType": "Lambda.Unknown", "errorMessage": "timed out"},
        }
    )


def _message(n: int, body: str) -> FailedIngest:
    try:
        record: InvocationRecord | None = InvocationRecord.model_validate_json(body)
    except ValueError:
        record = None
    return FailedIngest(f"m{n}", f"h{n}", record, body)


class Queue:
    def __init__(self, bodies: list[str]) -> None:
        self.visible = [_message(n, body) for n, body in enumerate(bodies)]
        self.deleted: list[str] = []
        self.released: list[str] = []

    def receive(self) -> list[FailedIngest]:
        received, self.visible = self.visible[:10], self.visible[10:]
        return received

    def delete(self, failed: FailedIngest) -> None:
        self.deleted.append(failed.message_id)

    def release(self, failed: FailedIngest) -> None:
        self.released.append(failed.message_id)


class Ingest:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.events: list[Any] = []

    def invoke(self, event: Any) -> str | None:
        self.events.append(event)
        key = event["Records"][0]["s3"]["object"]["key"]
        return "StorageError: S3 refused" if key in self.failing else None


def test_every_message_is_deleted_once_its_ingest_returned() -> None:
    queue = Queue([_record(f"manifests%2Fm{i}.jsonl") for i in range(12)])
    ingest = Ingest(failing=set())

    done = redrive_failed_ingests(queue, ingest)

    assert (done.redriven, done.kept) == (12, [])
    assert queue.deleted == [f"m{i}" for i in range(12)]
    assert len(ingest.events) == 12


def test_the_first_failure_stops_the_redrive_and_leaves_the_rest_visible() -> None:
    queue = Queue([_record("manifests%2Fa.jsonl"), _record("manifests%2Fb.jsonl"), _record("c")])
    ingest = Ingest(failing={"manifests%2Fb.jsonl"})

    done = redrive_failed_ingests(queue, ingest)

    assert done.redriven == 1
    assert queue.deleted == ["m0"]
    assert queue.released == ["m1", "m2"]
    (kept,) = done.kept
    assert "s3://data/manifests/b.jsonl" in kept  # the key as a person wrote it
    assert "StorageError: S3 refused" in kept
    assert len(ingest.events) == 2  # c was not tried


def test_a_message_that_is_no_invocation_record_is_kept_not_replayed() -> None:
    queue = Queue(["{not json", _record("manifests%2Fa.jsonl")])
    ingest = Ingest(failing=set())

    done = redrive_failed_ingests(queue, ingest)

    assert done.redriven == 0
    assert "not a Lambda invocation record" in done.kept[0]
    assert queue.released == ["m0", "m1"]
    assert ingest.events == []
