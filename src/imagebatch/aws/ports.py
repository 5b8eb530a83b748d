"""The ports the use cases take: what each of them needs of an adapter, as a Protocol.

Each Protocol names the part of one adapter in this package that `pipeline/` calls, so a use
case depends on what it does with the ledger or the store rather than on the DynamoDB or S3
class, and a test or a local stand-in can pass anything with those methods (the pattern of
Powertools' idempotency persistence layer). The adapters satisfy them structurally; mypy
checks each adapter against its port where the wiring (`imagebatch.wiring`) passes it in.

Ports live here, one module beside the adapters, rather than in each adapter module: they
are read together when a use case is written, and each is a few lines. The Bedrock runtime's
port is `backends.retry.ImageBackend` (the retrying wrapper takes the same Protocol).

The ingest use case's ports (IngestStore, IngestLedger, BatchStarter) are the parts of
aws.s3_store.BatchStore, aws.ledger.Ledger and aws.stepfunctions.StepFunctionsStarter that
ingest calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from imagebatch.costs.overhead import EndpointRequest, InstanceSample, Window
from imagebatch.costs.sagemaker_seconds import Measured
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.usage import Meter
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import ChunkFile, ChunkRef, ImageOutcome, MadeImage
from imagebatch.models.sagemaker_contract import SubmittedRequest


class IngestStore(Protocol):
    """What ingest reads and writes in the batch bucket; every request ticks `meter`."""

    @property
    def meter(self) -> Meter: ...

    def open_manifest(self, key: str, version_id: str | None = None) -> BinaryIO: ...

    def manifest_sha256(self, key: str, version_id: str | None = None) -> str: ...

    def object_exists(self, key: str) -> bool: ...

    def upload_file(self, path: str, key: str, content_type: str) -> None: ...

    def put_json(self, key: str, body: bytes) -> None: ...

    def put_chunk_index(self, batch_id: str, refs: list[ChunkRef]) -> str: ...

    def put_jsonl_report(self, batch_id: str, name: str, lines: Iterable[str]) -> str: ...


class IngestLedger(Protocol):
    """The batch record ingest reads (a redelivered upload) and creates; every request ticks
    `meter`."""

    @property
    def meter(self) -> Meter: ...

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def create_batch(self, batch_id: str, attributes: BatchRecord) -> bool: ...

    def find_made_images(self, identities: Sequence[str]) -> dict[str, MadeImage]: ...


class BatchStarter(Protocol):
    def start(self, batch_id: str, execution_input: dict[str, Any]) -> str: ...


class ChunkStorePort(Protocol):
    """The batch's S3 objects as a chunk's use cases read and write them (aws.s3_store)."""

    # What the store's requests cost is charged to the batch in the chunk's commit.
    meter: Meter
    # The stack's data bucket: a SageMaker result is trusted only from its prefixes.
    bucket: str

    def get_chunk(self, key: str) -> ChunkFile: ...

    def put_json(self, key: str, body: bytes) -> None: ...

    def read_uri(self, uri: str) -> bytes: ...

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]: ...

    def put_image(self, key: str, png: bytes, metadata: dict[str, str]) -> None: ...

    def image_size(self, key: str) -> int | None: ...

    def image_metadata(self, key: str) -> dict[str, str] | None: ...

    def list_keys_between(
        self, first: str, last: str, *, max_pages: int
    ) -> tuple[set[str], str]: ...

    def copy_image(
        self, source_key: str, key: str, size: int, metadata: dict[str, str]
    ) -> None: ...

    def put_pending_commit(self, batch_id: str, chunk_id: str, body: bytes) -> None: ...

    def get_pending_commit(self, batch_id: str, chunk_id: str) -> bytes | None: ...

    def delete_pending_commit(self, batch_id: str, chunk_id: str) -> None: ...


class ChunkLedgerPort(Protocol):
    """The cost ledger as a chunk's use cases use it (aws.ledger, aws.ledger_holds)."""

    # The ledger's own reads and writes, charged to the batch like the store's.
    meter: Meter

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def recorded_image_ids(self, batch_id: str, image_ids: Sequence[str]) -> set[str]: ...

    def find_made_images(self, identities: Sequence[str]) -> dict[str, MadeImage]: ...

    def reserve(
        self, batch_id: str, chunk_id: str, amount: int, *, retry: bool = True
    ) -> int | None: ...

    def hold_amount(self, batch_id: str, hold_id: str) -> int | None: ...

    def commit_images(
        self,
        batch_id: str,
        outcomes: Sequence[ImageOutcome],
        settlement: Settlement | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        capped: bool = False,
        rollup_model: str | None = None,
    ) -> int: ...


class TaskTokensPort(Protocol):
    """Answers a `waitForTaskToken` task (aws.stepfunctions.TaskTokens)."""

    def succeed(self, token: str, output: str) -> bool: ...

    def fail(self, token: str, error: str, cause: str) -> bool: ...


class AsyncEndpointPort(Protocol):
    """Submits one asynchronous inference request (aws.sagemaker_runtime.AsyncEndpoint)."""

    def submit(
        self, input_location: str, inference_id: str, timeout_s: int | None = None
    ) -> SubmittedRequest: ...


class ThroughputPort(Protocol):
    """What the endpoint measured per model and call shape (aws.throughput)."""

    def measured(self, endpoint: str, model: str, keys: Iterable[str]) -> dict[str, Measured]: ...

    def add(self, endpoint: str, model: str, sums: Mapping[str, tuple[int, int]]) -> None: ...


class EndpointInstancesPort(Protocol):
    """How many instances the endpoint has now (aws.sagemaker_endpoints.EndpointInstances)."""

    @property
    def endpoint_name(self) -> str: ...

    def sample(self, at: datetime) -> InstanceSample: ...


class EndpointUsagePort(Protocol):
    """The endpoint's instance samples, requests and charged windows in the ledger table
    (aws.endpoint_usage.EndpointUsageStore), as the endpoint observer uses them."""

    def record_sample(self, endpoint: str, sample: InstanceSample) -> None: ...

    def last_sample(self, endpoint: str) -> InstanceSample | None: ...

    def samples_since(self, endpoint: str, since: datetime | None) -> list[InstanceSample]: ...

    def requests_between(
        self, endpoint: str, start: datetime, end: datetime
    ) -> list[EndpointRequest]: ...

    def last_window_end(self, endpoint: str) -> datetime | None: ...

    def commit_window(self, endpoint: str, window: Window) -> Window: ...
