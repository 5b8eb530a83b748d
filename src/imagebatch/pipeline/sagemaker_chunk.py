"""The SageMaker branch of a chunk: submit it with its task token, record what came back.

submit_chunk runs inside `lambda:invoke.waitForTaskToken`: it never answers the state machine
itself unless there is nothing left to make. record_result runs per SNS notification (via SQS)
and answers the token: SendTaskSuccess with the chunk's totals after the ledger commit, or
SendTaskFailure so the state machine's Retry submits the chunk again.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ValidationError

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.backends.sagemaker import price_outcomes
from imagebatch.costs.prices import InstancePrice
from imagebatch.errors import ImagesAlreadyRecordedError
from imagebatch.models.records import ChunkResult, ChunkTask
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
)

if TYPE_CHECKING:
    from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
    from imagebatch.aws.stepfunctions import TaskTokens

logger = Logger(child=True)

INPUT_PREFIX = "async-inputs/"
#: The error names the state machine retries on (statemachine/batch.asl.json).
INFERENCE_FAILED = "SageMaker.InferenceFailed"
INCOMPLETE_RESULT = "SageMaker.IncompleteResult"


class SubmitTask(ChunkTask):
    """The SubmitChunk state's payload: the Map item plus its task token and retry count."""

    task_token: str
    retry_count: int = 0


class SubmitReceipt(BaseModel):
    inference_id: str | None
    input_location: str | None
    images: int
    skipped_already_done: int


def inference_id_for(task: SubmitTask) -> str:
    """Stable per token, so a re-invoked submit Lambda writes and submits the same request."""
    digest = hashlib.sha256(task.task_token.encode()).hexdigest()[:24]
    return f"{task.chunk.chunk_id}-{task.retry_count + 1}-{digest}"


def submit_chunk(
    task: SubmitTask,
    *,
    store: BatchStore,
    ledger: Ledger,
    endpoint: AsyncEndpoint,
    tokens: TaskTokens,
) -> SubmitReceipt:
    chunk = store.get_chunk(task.chunk.key)
    done = ledger.recorded_image_ids(task.batch_id, [job.image_id for job in chunk.images])
    todo = [job for job in chunk.images if job.image_id not in done]
    if not todo:
        # A retry after the images were recorded: nothing to send, answer the token now.
        result = ChunkResult.already_done(chunk.chunk_id, len(done))
        tokens.succeed(task.task_token, result.model_dump_json())
        return SubmitReceipt(
            inference_id=None, input_location=None, images=0, skipped_already_done=len(done)
        )
    inference_id = inference_id_for(task)
    invocation = ChunkInvocation(
        batch_id=chunk.batch_id,
        chunk_id=chunk.chunk_id,
        bucket=task.bucket,
        output_prefix=chunk.output_prefix,
        attempt=task.retry_count + 1,
        task_token=task.task_token,
        images=todo,
    )
    key = f"{INPUT_PREFIX}{chunk.batch_id}/{inference_id}.json"
    store.put_json(key, invocation.model_dump_json(exclude_none=True).encode())
    input_location = f"s3://{task.bucket}/{key}"
    output_location = endpoint.submit(input_location, inference_id)
    logger.info(
        "chunk submitted",
        extra={
            "inference_id": inference_id,
            "output_location": output_location,
            "images": len(todo),
        },
    )
    return SubmitReceipt(
        inference_id=inference_id,
        input_location=input_location,
        images=len(todo),
        skipped_already_done=len(done),
    )


def record_result(
    notification: AsyncNotification,
    *,
    store: BatchStore,
    ledger: Ledger,
    tokens: TaskTokens,
    price: InstancePrice,
) -> ChunkResult | None:
    """Price and record one finished async request, then answer its task token."""
    invocation = ChunkInvocation.model_validate_json(
        store.read_uri(notification.request_parameters.input_location)
    )
    token = invocation.task_token
    if token is None:
        logger.warning(
            "async request without a task token", extra={"id": notification.inference_id}
        )
        return None
    result = _result_or_fail(notification, store, tokens, token)
    if result is None:
        return None
    missing = {job.image_id for job in invocation.images} - {i.image_id for i in result.images}
    outcomes = price_outcomes(result, invocation.images, price, model_label="sagemaker")
    try:
        ledger.commit_images(invocation.batch_id, outcomes)
    except ImagesAlreadyRecordedError:
        _answer_if_all_recorded(notification, invocation, ledger, tokens, token)
        return None
    if missing:
        # Recorded what came back; the retry submits only the rest.
        tokens.fail(token, INCOMPLETE_RESULT, json.dumps({"missing": sorted(missing)}))
        return None
    chunk_result = ChunkResult(
        chunk_id=invocation.chunk_id,
        succeeded=sum(1 for o in outcomes if o.status == "SUCCEEDED"),
        failed=sum(1 for o in outcomes if o.status == "FAILED"),
        cost_micro_usd=sum(o.cost_micro_usd for o in outcomes),
    )
    tokens.succeed(token, chunk_result.model_dump_json())
    return chunk_result


def _result_or_fail(
    notification: AsyncNotification, store: BatchStore, tokens: TaskTokens, token: str
) -> InvocationResult | None:
    """The container's result, or None after failing the token so the state machine's Retry
    submits the chunk again (a failed request, or a result that does not parse)."""
    if notification.invocation_status == "Failed":
        cause = {
            "inference_id": notification.inference_id,
            "failure_reason": notification.failure_reason,
            "failure_location": notification.response_parameters.failure_location,
        }
        tokens.fail(token, INFERENCE_FAILED, json.dumps(cause))
        return None
    output = notification.response_parameters.output_location
    try:
        if output is None:
            raise ValueError("success notification without an outputLocation")
        return InvocationResult.model_validate_json(store.read_uri(output))
    except (ValueError, ValidationError) as exc:
        tokens.fail(token, INCOMPLETE_RESULT, str(exc)[:30000])
        return None


def _answer_if_all_recorded(
    notification: AsyncNotification,
    invocation: ChunkInvocation,
    ledger: Ledger,
    tokens: TaskTokens,
    token: str,
) -> None:
    """A second delivery of this notification, or a late result of an attempt the state
    machine already retried: if every image is recorded, this token's chunk is done."""
    ids = [job.image_id for job in invocation.images]
    recorded = ledger.recorded_image_ids(invocation.batch_id, ids)
    logger.info(
        "result already recorded",
        extra={"inference_id": notification.inference_id, "recorded": len(recorded)},
    )
    if len(recorded) == len(ids):
        done = ChunkResult.already_done(invocation.chunk_id, len(ids))
        tokens.succeed(token, done.model_dump_json())
