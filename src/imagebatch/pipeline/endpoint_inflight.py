"""Endpoint requests finalize waits for: a chunk's Map child may fail for good (its SubmitChunk
Lambda failed after InvokeEndpointAsync, its retries spent) while its request still waits in
SageMaker's queue. The endpoint makes and stores those images later; recorded lost by
finalize, they would be PNGs without a SUCCEEDED record, listed for redrive (bought again),
their seconds charged to nobody (issue 18, chaos seed 7).

So before its fence, finalize looks for requests of chunks with images not recorded yet that
may still answer, and raises EndpointResultsPending (the state machine runs it again later)
while there are any. A request may still answer while
  - it has no result or failure object and SageMaker may still run it: queued up to its TTL,
    then running up to its invocation timeout (both at their largest: finalize does not know
    what SubmitChunk sent);
  - its result or failure object exists, the chunk's failure was recorded before it (or not
    at all), and RecordResult may still be redelivering its notification.
Everything is read from listings (the request objects' and the outcomes' LastModified) and
the ledger: finalize reads no request object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from imagebatch.aws.s3_store import chunk_key
from imagebatch.errors import EndpointResultsPending, StorageError
from imagebatch.models.records import ChunkFile
from imagebatch.models.sagemaker_contract import chunk_of_inference
from imagebatch.pipeline.result_authentication import FAILURES, INPUTS, OUTPUTS
from imagebatch.settings import MAX_INVOCATION_TIMEOUT_S, MAX_REQUEST_TTL_S

logger = Logger(child=True)

#: The most a request can take from its submit to its outcome.
REQUEST_DEADLINE = timedelta(seconds=MAX_REQUEST_TTL_S + MAX_INVOCATION_TIMEOUT_S)
#: RecordResult's queue redelivers a notification whose record failed: VisibilityTimeout
#: 360 s, maxReceiveCount 5 (template.yaml, ResultsQueue); past that it is in the DLQ.
NOTIFICATION_GRACE = timedelta(seconds=5 * 360)


class Listing(Protocol):
    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]: ...


class InflightStore(Listing, Protocol):
    def get_chunk(self, key: str) -> ChunkFile: ...


class InflightLedger(Protocol):
    def recorded_image_ids(self, batch_id: str, image_ids: list[str]) -> set[str]: ...


def wait_for_endpoint_results(
    batch_id: str,
    store: InflightStore,
    ledger: InflightLedger,
    markers: Mapping[str, Mapping[str, Any]],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Raise EndpointResultsPending while a request of this batch may still record images
    no one recorded yet (the module says which); `markers`: the failed chunks' CHUNK#
    records, by chunk id."""
    try:
        pending = requests_in_flight(batch_id, store, ledger, markers, now())
    except StorageError as exc:
        # an S3 blip listing them: wait as for a pending result (the same Retry), rather
        # than fail finalize for good
        if not exc.transient:
            raise
        raise EndpointResultsPending(f"endpoint requests not listed: {exc}") from exc
    if pending:
        logger.warning("endpoint results pending", extra={"requests": pending[:20]})
        raise EndpointResultsPending(f"{len(pending)} endpoint requests may still answer")


def requests_in_flight(
    batch_id: str,
    store: InflightStore,
    ledger: InflightLedger,
    markers: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> list[str]:
    """The inference ids of this batch's requests that may still answer (the module)."""
    young: dict[str, dict[str, datetime]] = {}
    for inference_id, modified in stored_requests(store, f"{INPUTS}{batch_id}/"):
        if now - modified < REQUEST_DEADLINE + NOTIFICATION_GRACE:
            young.setdefault(chunk_of_inference(inference_id), {})[inference_id] = modified
    pending: list[str] = []
    for chunk_id, requests in sorted(young.items()):
        ids = [job.image_id for job in store.get_chunk(chunk_key(batch_id, chunk_id)).images]
        if len(ledger.recorded_image_ids(batch_id, ids)) == len(ids):
            continue
        failed_at = _failed_at(markers.get(chunk_id))
        for inference_id, submitted in sorted(requests.items()):
            outcome = outcome_time(store, inference_id)
            if outcome is None:
                waiting = now - submitted < REQUEST_DEADLINE
            else:
                processed = failed_at is not None and failed_at > outcome
                waiting = not processed and now - outcome < NOTIFICATION_GRACE
            if waiting:
                pending.append(inference_id)
    return pending


def stored_requests(store: Listing, prefix: str) -> Iterator[tuple[str, datetime]]:
    """(inference id, when written) of each request object under `prefix` (SubmitChunk's
    `<inference id>.json`; its `.submitted.json` beside it is not a request)."""
    for key, modified in store.list_objects(prefix):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".json") and not name.endswith(".submitted.json"):
            yield name.removesuffix(".json"), modified


def outcome_time(store: Listing, inference_id: str) -> datetime | None:
    """When SageMaker wrote the request's result or failure object (it names them after the
    inference id, under S3OutputPath and S3FailurePath); None: neither exists."""
    names = {f"{OUTPUTS}{inference_id}.out", f"{FAILURES}{inference_id}-error.out"}
    times = [
        modified
        for prefix in (OUTPUTS, FAILURES)
        for key, modified in store.list_objects(f"{prefix}{inference_id}")
        if key in names
    ]
    return max(times, default=None)


def _failed_at(marker: Mapping[str, Any] | None) -> datetime | None:
    """When RecordChunkFailure wrote the chunk's marker ($$.State.EnteredTime); None for
    none, or one written before the marker carried its time."""
    value = marker.get("failed_at") if marker is not None else None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
