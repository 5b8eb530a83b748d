"""The ports a use case holds, as Protocols beside the adapters that implement them (as
Powertools' idempotency persistence layer declares its base class beside DynamoDB's): a use
case types its ports with these, the handler injects the adapters, a test injects a fake.

Each Protocol is the part of an adapter one use case calls, not the adapter's whole surface:
    IngestStore    aws.s3_store.BatchStore           the manifest, chunk files, errors.jsonl
    IngestLedger   aws.ledger.Ledger                 the batch record
    BatchStarter   aws.stepfunctions.StepFunctionsStarter   the batch's execution
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO, Protocol

from imagebatch.costs.usage import Meter
from imagebatch.models.records import ChunkRef


class IngestStore(Protocol):
    """What ingest reads and writes in the batch bucket; every request ticks `meter`."""

    @property
    def meter(self) -> Meter: ...

    def open_manifest(self, key: str) -> BinaryIO: ...

    def upload_file(self, path: str, key: str, content_type: str) -> None: ...

    def put_json(self, key: str, body: bytes) -> None: ...

    def put_chunk_index(self, batch_id: str, refs: list[ChunkRef]) -> str: ...

    def put_jsonl_report(self, batch_id: str, name: str, lines: Iterable[str]) -> str: ...


class IngestLedger(Protocol):
    """The batch record ingest reads (a redelivered upload) and creates; every request ticks
    `meter`."""

    @property
    def meter(self) -> Meter: ...

    def get_batch(self, batch_id: str) -> dict[str, Any] | None: ...

    def create_batch(self, batch_id: str, attributes: Mapping[str, Any]) -> bool: ...


class BatchStarter(Protocol):
    def start(self, batch_id: str, execution_input: dict[str, Any]) -> str: ...
