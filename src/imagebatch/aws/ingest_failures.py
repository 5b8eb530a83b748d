"""The ingest function's on-failure destination (IngestFailureQueue) and the synchronous
invoke that replays one of its events, for `imagebatch redrive-ingest`.

A replay is safe however often it runs: ingest names the batch by bucket, key and the
content's SHA-256, so an upload that got as far as its batch record is not ingested twice,
and a running batch is not started again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from imagebatch.aws.session import aws_errors
from imagebatch.models.invocation_record import FailedIngest, InvocationRecord

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sqs import SQSClient

# A received message stays hidden while its replay runs: ingest's Timeout (900 s in
# template.yaml) and a minute, so a second redrive at once does not replay it beside us.
REPLAY_VISIBILITY_S = 960
_RECEIVE_LIMIT = 10  # SQS ReceiveMessage's most


class IngestFailureQueue:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url

    def receive(self) -> list[FailedIngest]:
        """Up to ten messages, each hidden for REPLAY_VISIBILITY_S; [] when none is visible."""
        with aws_errors(f"reading {self.queue_url}"):
            response = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=_RECEIVE_LIMIT,
                VisibilityTimeout=REPLAY_VISIBILITY_S,
                WaitTimeSeconds=0,
            )
        return [
            FailedIngest(m["MessageId"], m["ReceiptHandle"], _record(m["Body"]), m["Body"])
            for m in response.get("Messages", [])
        ]

    def delete(self, failed: FailedIngest) -> None:
        with aws_errors(f"deleting a message of {self.queue_url}"):
            self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=failed.receipt_handle)

    def release(self, failed: FailedIngest) -> None:
        """Visible again at once: the next redrive (or the alarm) finds it."""
        with aws_errors(f"releasing a message of {self.queue_url}"):
            self._sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=failed.receipt_handle, VisibilityTimeout=0
            )


def _record(body: str) -> InvocationRecord | None:
    try:
        return InvocationRecord.model_validate_json(body)
    except ValidationError:
        return None


class IngestInvoker:
    """Runs the ingest function on an event, synchronously (RequestResponse): Lambda neither
    retries it nor sends it to the destination again, and its answer says whether ingest
    accepted it. The client should not retry an Invoke (session.AwsSession.lambda_invoker)."""

    def __init__(self, lambda_client: LambdaClient, function_name: str) -> None:
        self._lambda = lambda_client
        self.function_name = function_name

    def invoke(self, event: Any) -> str | None:
        """None when ingest returned; otherwise its error, as one line."""
        with aws_errors(f"invoking {self.function_name}"):
            response = self._lambda.invoke(
                FunctionName=self.function_name,
                InvocationType="RequestResponse",
                Payload=json.dumps(event).encode(),
            )
            body = response["Payload"].read()
        if not response.get("FunctionError"):
            return None
        try:
            error = json.loads(body or b"{}")
        except ValueError:
            return body.decode("utf-8", "replace")[:500]
        if isinstance(error, dict):
            return f"{error.get('errorType', 'error')}: {error.get('errorMessage', '')}"
        return str(error)[:500]
