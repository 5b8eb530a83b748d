"""Which SageMaker result notifications RecordResult may trust (issue 19).

The topic and queue policies keep everyone but the endpoint from publishing results or
sending them to the queue (template.yaml); this is the check behind them, on what the
notification itself says, so a misconfigured policy cannot move money:

- the SQS body is an SNS envelope (raw delivery is off) from one of the stack's result
  topics: a body sent to the queue directly, or another topic's, is refused;
- the request object is under async-inputs/ of the stack's bucket, and is the one the
  notification's inference id names (SubmitChunk keys it async-inputs/<batch>/<id>.json);
- the result or failure object is under async-outputs/ or async-failures/ of that bucket,
  which only the endpoint's role may write (the bucket policy).

Each refusal is a ForgedResultError; the handler logs it, counts it and drops the message.
"""

from __future__ import annotations

import json

from imagebatch.errors import ForgedResultError
from imagebatch.models.sagemaker_contract import AsyncNotification, ChunkInvocation

#: The endpoint's S3OutputPath and S3FailurePath (template.yaml), and SubmitChunk's inputs.
INPUTS, OUTPUTS, FAILURES = "async-inputs/", "async-outputs/", "async-failures/"


def notification_from(body: str, topics: frozenset[str]) -> AsyncNotification:
    """The notification in an SQS body, if an SNS envelope from one of `topics` carries it."""
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise ForgedResultError(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or envelope.get("Type") != "Notification":
        raise ForgedResultError("not an SNS notification: sent to the queue directly?")
    topic = envelope.get("TopicArn")
    if topic not in topics:
        raise ForgedResultError(f"from topic {topic!r}, not one of the stack's result topics")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise ForgedResultError("an SNS notification without a Message")
    return AsyncNotification.model_validate_json(message)


def check_locations(notification: AsyncNotification, bucket: str) -> None:
    """The request, result and failure objects are where only the stack writes them, and
    the request is the one the inference id names."""
    root = f"s3://{bucket}/"
    request = notification.request_parameters.input_location
    if not request.startswith(root + INPUTS):
        raise ForgedResultError(f"request {request} is not under {root}{INPUTS}")
    if not request.endswith(f"/{notification.inference_id}.json"):
        raise ForgedResultError(f"request {request} is not inference {notification.inference_id}'s")
    response = notification.response_parameters
    for location, prefix in (
        (response.output_location, OUTPUTS),
        (response.failure_location, FAILURES),
    ):
        if location is not None and not location.startswith(root + prefix):
            raise ForgedResultError(f"{location} is not under {root}{prefix}")


def check_request(
    notification: AsyncNotification, invocation: ChunkInvocation, bucket: str
) -> None:
    """The request object read back is this stack's and this inference's: its bucket, its
    batch in its key, and (capped) the budget hold SubmitChunk named after the inference."""
    expected = f"s3://{bucket}/{INPUTS}{invocation.batch_id}/{notification.inference_id}.json"
    if notification.request_parameters.input_location != expected:
        raise ForgedResultError(f"request of batch {invocation.batch_id} is not at {expected}")
    if invocation.bucket != bucket:
        raise ForgedResultError(f"request for bucket {invocation.bucket}, not {bucket}")
    if invocation.hold_id is not None and invocation.hold_id != notification.inference_id:
        raise ForgedResultError(
            f"hold {invocation.hold_id} is not inference {notification.inference_id}'s"
        )
