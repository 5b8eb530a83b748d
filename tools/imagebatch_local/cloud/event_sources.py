"""Lambda event source mappings for SQS, as the Lambda service runs them: poll, invoke, delete.

moto can invoke a function when a message is sent, but inside the sender's request and with no
partial batch responses. This poller behaves like the real mapping instead: long-polls the
queue, invokes the handler with an SQS event of up to BatchSize records, deletes the records
that succeeded (all but `batchItemFailures` when the function reports them) and leaves the rest
to reappear after the visibility timeout; the queue's redrive policy then moves a message that
keeps failing to its dead-letter queue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import boto3

from imagebatch_local.cloud.lambda_runtime import InProcessLambdaRuntime, acting_as
from imagebatch_local.template import ACCOUNT_ID, REGION

logger = logging.getLogger(__name__)

_MAX_BATCH = 10  # ReceiveMessage's limit


@dataclass(frozen=True)
class SqsSource:
    function_name: str
    queue_url: str
    batch_size: int = 10
    report_batch_item_failures: bool = False
    region: str = REGION

    @property
    def queue_arn(self) -> str:
        return f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{self.queue_url.rsplit('/', 1)[-1]}"


def sqs_event(
    messages: list[dict[str, Any]], queue_arn: str, region: str = REGION
) -> dict[str, Any]:
    """The event Lambda passes for SQS messages (the shape Powertools' SQSRecord reads)."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody")
                or hashlib.md5(message["Body"].encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


class SqsEventSourcePoller:
    def __init__(
        self, runtime: InProcessLambdaRuntime, sources: list[SqsSource], endpoint: str
    ) -> None:
        self._runtime = runtime
        self._sources = sources
        self._endpoint = endpoint
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.batches = 0

    def start(self) -> None:
        for source in self._sources:
            thread = threading.Thread(
                target=self._poll, args=(source,), name=f"sqs-{source.function_name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def _poll(self, source: SqsSource) -> None:
        # The Lambda service polls with the function's execution role.
        with acting_as(self._runtime.logical_id(source.function_name)):
            self._poll_until_stopped(source)

    def _poll_until_stopped(self, source: SqsSource) -> None:
        sqs = boto3.client("sqs", endpoint_url=self._endpoint, region_name=source.region)
        while not self._stop.is_set():
            try:
                self.poll_once(sqs, source, wait_s=1)
            except Exception as exc:  # noqa: BLE001 - the poller outlives one bad poll
                logger.warning("polling %s failed: %s", source.queue_url, exc)
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.5)

    def poll_once(self, sqs: Any, source: SqsSource, *, wait_s: int = 0) -> int:
        """One receive-invoke-delete round; returns how many messages were deleted."""
        response = sqs.receive_message(
            QueueUrl=source.queue_url,
            MaxNumberOfMessages=min(source.batch_size, _MAX_BATCH),
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.batches += 1
        payload, errored = self._runtime.invoke(
            source.function_name, sqs_event(messages, source.queue_arn, source.region)
        )
        if errored:
            # The whole batch returns to the queue after its visibility timeout.
            self.errors.append(payload)
            return 0
        failed: set[str] = set()
        if source.report_batch_item_failures:
            result = json.loads(payload or "null") or {}
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=source.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return len(done)
