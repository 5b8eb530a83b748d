"""One endpoint request per chunk attempt, whatever the task token.

A SubmitChunk Lambda killed after InvokeEndpointAsync (Sandbox.Timedout, Lambda.Unknown) is
retried by the state machine with a new task token and a new RetryCount, so neither can name
the request: submitted again under a new InferenceId, the chunk would run twice (both runs
charged). A chunk's requests are numbered instead (`<chunk>-<n>-<digest of batch, chunk, n>`):
a submit first looks at the chunk's latest request, and while that one may still answer it
sends nothing and points the stored request at its own token, which the result then
answers. A new request (the next number) is sent only when the latest cannot answer any more:
  - its result or failure object exists (RecordResult answered its token, whose failure is
    what the state machine retried);
  - it was given up (SageMaker refused it, nothing queued: the stored request lost its token);
  - it is older than SubmitChunk's HeartbeatSeconds: the state machine gave up on it, and by
    then it cannot be queued any more (its TTL is shorter).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.aws.s3_store import chunk_key
from imagebatch.costs.usage import LambdaClock, Usage
from imagebatch.errors import ChunkUnfinished, StorageError
from imagebatch.models.records import FailureClass
from imagebatch.models.sagemaker_contract import ChunkInvocation
from imagebatch.pipeline.endpoint_inflight import outcome_time, stored_requests
from imagebatch.pipeline.result_authentication import INPUTS
from imagebatch.pipeline.sagemaker_submit_budget import request_body
from imagebatch.pipeline.sagemaker_submit_retry import retrying
from imagebatch.settings import MAX_REQUEST_TTL_S

logger = Logger(child=True)

#: SubmitChunk's HeartbeatSeconds (statemachine/batch.asl.json): the TTL plus a first call.
HEARTBEAT = timedelta(seconds=MAX_REQUEST_TTL_S + 600)


def request_id(batch_id: str, chunk_id: str, number: int) -> str:
    """The InferenceId of a chunk's `number`th request: the same for every try of it."""
    digest = hashlib.sha256(f"{batch_id}/{chunk_id}/{number}".encode()).hexdigest()[:24]
    return f"{chunk_id}-{number}-{digest}"


def request_key(batch_id: str, inference_id: str) -> str:
    return f"{INPUTS}{batch_id}/{inference_id}.json"


def current_request(
    store: ChunkStorePort, batch_id: str, chunk_id: str, now: datetime
) -> tuple[int, ChunkInvocation | None]:
    """(the number this submit's request has, the stored request when it is the chunk's
    latest and may still answer: then nothing is sent)."""
    latest: tuple[int, str, datetime] | None = None
    for inference_id, modified in stored_requests(store, f"{INPUTS}{batch_id}/{chunk_id}-"):
        number = _number(inference_id)
        if number is not None and (latest is None or number > latest[0]):
            latest = (number, inference_id, modified)
    if latest is None:
        return 1, None
    number, inference_id, modified = latest
    if now - modified >= HEARTBEAT or outcome_time(store, inference_id) is not None:
        return number + 1, None
    stored = ChunkInvocation.model_validate_json(
        store.read_uri(f"s3://{store.bucket}/{request_key(batch_id, inference_id)}")
    )
    if stored.task_token is None:
        return number + 1, None
    return number, stored


def _number(inference_id: str) -> int | None:
    parts = inference_id.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def live_request(
    store: ChunkStorePort,
    batch_id: str,
    chunk_id: str,
    now: datetime,
    time_left_s: Callable[[], float] | None,
) -> tuple[int, ChunkInvocation | None]:
    """current_request, its S3 calls tried again while there is time; an S3 outage hands
    the chunk's images back unfinished (nothing was sent or held yet)."""
    try:
        return retrying(lambda: current_request(store, batch_id, chunk_id, now), time_left_s)
    except StorageError as exc:
        if not exc.transient:
            raise
        raise _unfinished(store, batch_id, chunk_id) from exc


def resume(
    live: ChunkInvocation,
    number: int,
    task_token: str,
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    clock: LambdaClock,
    time_left_s: Callable[[], float] | None,
) -> str:
    """Point the chunk's live request at this task's token, adding what this attempt spent
    to the counts its result charges: nothing is sent, its hold (if any) stays its own.
    Returns its InferenceId."""
    inference_id = request_id(live.batch_id, live.chunk_id, number)
    key = request_key(live.batch_id, inference_id)
    body, _ = request_body(
        live.model_copy(update={"task_token": task_token}),
        store,
        ledger,
        clock,
        earlier=Usage(**live.submit_usage),
    )
    try:
        retrying(lambda: store.put_json(key, body), time_left_s)
    except StorageError as exc:
        # the request still answers the old token: hand the chunk back, to be pointed again
        if not exc.transient:
            raise
        raise _unfinished(store, live.batch_id, live.chunk_id) from exc
    logger.info(
        "chunk's request still live: pointed at this attempt's token, nothing sent",
        extra={"inference_id": inference_id},
    )
    return inference_id


def _unfinished(store: ChunkStorePort, batch_id: str, chunk_id: str) -> ChunkUnfinished:
    """Every image of the chunk back to the state machine as throttled: its retry asks again
    (the images already recorded are skipped then)."""
    chunk = store.get_chunk(chunk_key(batch_id, chunk_id))
    return ChunkUnfinished({job.image_id: FailureClass.THROTTLED for job in chunk.images})
