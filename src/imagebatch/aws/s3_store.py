"""S3 adapter: the only module that talks to the data bucket."""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from imagebatch.aws.network import NETWORK_ERRORS
from imagebatch.costs.usage import Meter
from imagebatch.errors import ObjectMissingError, StorageError
from imagebatch.models.records import ChunkFile, ChunkRef

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


# A report larger than this is spooled to /tmp on its way to S3, not held in memory.
SPOOL_BYTES = 8 * 1024 * 1024
# Pieces a manifest is hashed in: few reads, little memory.
_HASH_READ_BYTES = 1024 * 1024
# A finalize report's conditional PUT read again after a concurrent write: two runs at most
# race for it, so a few tries end it.
_GENERATION_TRIES = 5
# The pending file is written in the outage that failed the commit: a few tries over about
# a second, on top of botocore's own.
PENDING_ATTEMPTS = 4
PENDING_BACKOFF_S = 0.1
_S3_TRANSIENT_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "503", "500"}
)

_PENDING_ERRORS: tuple[type[Exception], ...] = (ClientError, *NETWORK_ERRORS)


def _s3_transient(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return exc.response["Error"]["Code"] in _S3_TRANSIENT_CODES or status >= 500


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 URI without bucket or key: {uri!r}")
    return bucket, key


def chunk_key(batch_id: str, chunk_id: str) -> str:
    return f"chunks/{batch_id}/{chunk_id}.json"


def pending_commit_key(batch_id: str, chunk_id: str) -> str:
    return f"chunks/{batch_id}/{chunk_id}.pending.json"


def chunk_index_key(batch_id: str) -> str:
    return f"chunks/{batch_id}/index.json"


def report_key(batch_id: str, name: str) -> str:
    return f"reports/{batch_id}/{name}"


def image_key(output_prefix: str, batch_id: str, image_id: str) -> str:
    return f"{output_prefix}{batch_id}/{image_id}.png"


class BatchStore:
    def __init__(self, client: S3Client, bucket: str, meter: Meter | None = None) -> None:
        self._s3 = client
        self.bucket = bucket
        # Every request this store makes is counted: the ledger charges the batch for them.
        self.meter = meter or Meter()
        # Asked before each object read: a caller with a deadline (the contact sheet's budget
        # hold) raises from it to stop reading.
        self.before_read: Callable[[], None] | None = None

    def _get(self, key: str) -> bytes:
        self.meter.add(s3_get_requests=1)
        return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def _put(
        self, key: str, body: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        self.meter.add(s3_put_requests=1, s3_bytes_written=len(body))
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata=metadata or {},
        )

    def open_manifest(self, key: str, version_id: str | None = None) -> BinaryIO:
        """The manifest's bytes: of `version_id` when the event names one (the bucket is
        versioned, and the key may have been overwritten since), else the key's only version."""
        self.meter.add(s3_get_requests=1)
        response = (
            self._s3.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            if version_id
            else self._s3.get_object(Bucket=self.bucket, Key=key)
        )
        body = response["Body"]
        return cast(BinaryIO, body)

    def manifest_sha256(self, key: str, version_id: str | None = None) -> str:
        """The SHA-256 of the manifest's bytes, streamed (memory stays flat at any size): what
        a batch is, whatever ETag the upload tool left (multipart and SSE-KMS ETags are not the
        content's MD5)."""
        digest = hashlib.sha256()
        body = self.open_manifest(key, version_id)
        try:
            for piece in iter(lambda: body.read(_HASH_READ_BYTES), b""):
                digest.update(piece)
        finally:
            body.close()
        return digest.hexdigest()

    def put_chunk(self, chunk: ChunkFile) -> ChunkRef:
        key = chunk_key(chunk.batch_id, chunk.chunk_id)
        self._put_json(key, chunk.model_dump_json(exclude_defaults=True).encode())
        return ChunkRef(chunk_id=chunk.chunk_id, key=key, images=len(chunk.images))

    def put_chunk_index(self, batch_id: str, refs: list[ChunkRef]) -> str:
        key = chunk_index_key(batch_id)
        self._put_json(key, json.dumps([ref.model_dump() for ref in refs]).encode())
        return key

    def get_chunk(self, key: str) -> ChunkFile:
        return ChunkFile.model_validate_json(self._get(key))

    def get_chunk_index(self, batch_id: str) -> list[ChunkRef]:
        key = chunk_index_key(batch_id)
        return [ChunkRef.model_validate(entry) for entry in json.loads(self._get(key))]

    def put_image(self, key: str, png: bytes, metadata: dict[str, str]) -> None:
        """StorageError when S3 still refuses after botocore's retries: the caller decides
        what a made-but-unstored image is (it was paid for)."""
        try:
            self._put(key, png, "image/png", metadata)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"PNG upload to s3://{self.bucket}/{key}: {exc}", transient=True
            ) from exc

    def image_metadata(self, key: str) -> dict[str, str] | None:
        """A stored PNG's user metadata; None when there is no such object."""
        self.meter.add(s3_get_requests=1)
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return dict(head.get("Metadata") or {})

    def list_keys_between(
        self, first: str, last: str, *, max_pages: int, page_size: int = 1000
    ) -> tuple[set[str], str]:
        """The keys from `first` to `last` (both included) under their common prefix, in key
        order: ListObjectsV2 pages of `page_size` (each priced as a PUT), at most `max_pages`.
        Returns the keys found and the key the listing reached (`last` when it covered the
        range: a key past it is unknown). StorageError (transient) when S3 refuses."""
        # the characters both keys share (a key prefix, not a path's components)
        shared = next(
            (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b),
            min(len(first), len(last)),
        )
        prefix = first[:shared]
        found: set[str] = set()
        # StartAfter is exclusive: from just before `first` (its own prefix sorts first)
        start_after = first[:-1]
        for _ in range(max(1, max_pages)):
            self.meter.add(s3_put_requests=1)
            try:
                page = self._s3.list_objects_v2(
                    Bucket=self.bucket, Prefix=prefix, MaxKeys=page_size, StartAfter=start_after
                )
            except (ClientError, BotoCoreError) as exc:
                raise StorageError(
                    f"ListObjectsV2 s3://{self.bucket}/{prefix}: {exc}", transient=True
                ) from exc
            keys = [obj["Key"] for obj in page.get("Contents", [])]
            found.update(key for key in keys if first <= key <= last)
            if not page.get("IsTruncated") or not keys or keys[-1] >= last:
                return found, last
            start_after = keys[-1]
        return found, start_after

    def put_pending_commit(self, batch_id: str, chunk_id: str, body: bytes) -> None:
        """What an attempt made but could not record in the ledger, for the next attempt.

        Written during the outage that failed the commit, so a connection error or a 5xx is
        retried here (the file is the only record of paid-for images); StorageError
        (transient) when S3 still refuses."""
        key = pending_commit_key(batch_id, chunk_id)
        for attempt in range(PENDING_ATTEMPTS):
            try:
                self._put(key, body, "application/json")
                return
            except _PENDING_ERRORS as exc:
                transient = not isinstance(exc, ClientError) or _s3_transient(exc)
                if not transient or attempt == PENDING_ATTEMPTS - 1:
                    raise StorageError(
                        f"pending commit to s3://{self.bucket}/{key}: {exc}", transient=transient
                    ) from exc
                time.sleep(random.uniform(0, PENDING_BACKOFF_S * 2**attempt))

    def get_pending_commit(self, batch_id: str, chunk_id: str) -> bytes | None:
        self.meter.add(s3_get_requests=1)
        try:
            return self.open_object(pending_commit_key(batch_id, chunk_id)).read()
        except ObjectMissingError:
            return None

    def delete_pending_commit(self, batch_id: str, chunk_id: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=pending_commit_key(batch_id, chunk_id))

    def put_json(self, key: str, body: bytes) -> None:
        """StorageError (transient for a throttle, a 5xx or the network) when S3 refuses
        after botocore's retries: the caller retries within its time (the PUT is idempotent)."""
        try:
            self._put_json(key, body)
        except _PENDING_ERRORS as exc:
            transient = not isinstance(exc, ClientError) or _s3_transient(exc)
            raise StorageError(f"PUT s3://{self.bucket}/{key}: {exc}", transient=transient) from exc

    def put_report(
        self,
        batch_id: str,
        name: str,
        document: BaseModel | dict[str, object],
        *,
        generation: int | None = None,
    ) -> str:
        """`generation`: the finalize run writing it; see _put_generation."""
        key = report_key(batch_id, name)
        body = (
            document.model_dump_json(indent=2)
            if isinstance(document, BaseModel)
            else json.dumps(document, indent=2, default=str)
        )
        if generation is None:
            self._put_json(key, body.encode())
        else:
            self.meter.add(s3_put_requests=1, s3_bytes_written=len(body))
            self._put_generation(key, body.encode(), "application/json", generation)
        return key

    def put_jsonl_report(
        self, batch_id: str, name: str, lines: Iterable[str], *, generation: int | None = None
    ) -> str:
        """One PUT of every line, spooled to a temporary file past SPOOL_BYTES, so a report of
        any length is written with flat memory. `generation`: see _put_generation."""
        key = report_key(batch_id, name)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for line in lines:
                spool.write(f"{line}\n".encode())
            size = spool.tell()
            spool.seek(0)
            self.meter.add(s3_put_requests=1, s3_bytes_written=size)
            if generation is None:
                self._s3.put_object(
                    Bucket=self.bucket, Key=key, Body=spool, ContentType="application/x-ndjson"
                )
            else:
                self._put_generation(key, spool, "application/x-ndjson", generation)
        return key

    def _put_generation(
        self, key: str, body: bytes | IO[bytes], content_type: str, generation: int
    ) -> bool:
        """Write a finalize run's report unless a later run (a higher `generation`, in the
        object's metadata) wrote it: two runs of one batch's finalize (a retry while the
        first still ran) must not leave the older run's data. The PUT is conditional on the
        ETag read (If-Match, or If-None-Match when absent), so a write between the read and
        the PUT is seen and read again. False: a later run's report is kept."""
        for _ in range(_GENERATION_TRIES):
            self.meter.add(s3_get_requests=1)
            try:
                head = self._s3.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in {"404", "NoSuchKey", "NotFound"}:
                    raise
                head = None
            if head is not None:
                written_by = head.get("Metadata", {}).get("finalize-generation", "0")
                if written_by.isdigit() and int(written_by) > generation:
                    return False
            condition = {"IfMatch": head["ETag"]} if head else {"IfNoneMatch": "*"}
            if not isinstance(body, bytes):
                body.seek(0)
            try:
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType=content_type,
                    Metadata={"finalize-generation": str(generation)},
                    **condition,  # type: ignore[arg-type]
                )
            except ClientError as exc:
                # 412: written meanwhile; 409: a concurrent conditional write won
                if exc.response["Error"]["Code"] not in {
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                }:
                    raise
                continue
            return True
        raise StorageError(f"{key}: finalize runs kept writing it at once", transient=True)

    def read_uri(self, uri: str) -> bytes:
        """An object named by an s3:// URI (SageMaker's input and output locations), which may
        be in another bucket than this store's."""
        bucket, key = split_s3_uri(uri)
        self.meter.add(s3_get_requests=1)
        try:
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self._s3.exceptions.NoSuchKey as exc:
            raise ObjectMissingError(f"{uri} does not exist") from exc

    def get_bytes(self, key: str) -> bytes:
        self.meter.add(s3_get_requests=1)
        return self.open_object(key).read()

    def open_object(self, key: str) -> BinaryIO:
        """A streaming body; ObjectMissingError (not a botocore error) when there is no such key."""
        if self.before_read is not None:
            self.before_read()
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self._s3.exceptions.NoSuchKey as exc:
            raise ObjectMissingError(f"s3://{self.bucket}/{key} does not exist") from exc
        return cast(BinaryIO, body)

    def put_bytes(self, key: str, body: bytes, content_type: str) -> str:
        self.meter.add(s3_put_requests=1, s3_bytes_written=len(body))
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        return key

    def put_manifest(self, key: str, body: bytes) -> str | None:
        """A manifest written by the stack itself (the catalog night); returns the version S3
        gave it (None: the bucket is not versioned), which finalize later checks a batch ran."""
        self.meter.add(s3_put_requests=1, s3_bytes_written=len(body))
        response = self._s3.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )
        return response.get("VersionId")

    def copy(self, source_key: str, key: str) -> None:
        """Server-side copy: metadata (prompt hash, seed, model) travels with the image."""
        self._s3.copy_object(
            Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source_key}
        )

    def image_size(self, key: str) -> int | None:
        """The object's size (HeadObject, a GET-priced request), None when it is gone: an
        image index entry whose PNG was deleted is a miss (pipeline.reuse)."""
        self.meter.add(s3_get_requests=1)
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(
                f"HeadObject s3://{self.bucket}/{key}: {exc}", transient=True
            ) from exc
        return int(head["ContentLength"])

    def object_exists(self, key: str) -> bool:
        """Whether the key holds an object (HeadObject, a GET-priced request)."""
        return self.image_size(key) is not None

    def copy_image(self, source_key: str, key: str, size: int, metadata: dict[str, str]) -> None:
        """A reused image: server-side copy (a COPY request, priced as a PUT; the new object's
        bytes are stored like a PUT's) with this batch's metadata. StorageError as put_image."""
        self.meter.add(s3_put_requests=1, s3_bytes_written=size)
        try:
            self._s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                ContentType="image/png",
                Metadata=metadata,
                MetadataDirective="REPLACE",
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"PNG copy s3://{self.bucket}/{source_key} -> {key}: {exc}", transient=True
            ) from exc

    def list_keys(self, prefix: str) -> Iterator[str]:
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(key, LastModified) of each object under `prefix`; each page is a LIST request,
        which S3 bills at the PUT request price (counted as one). A failed LIST raises
        StorageError (transient: throttles, 5xx and connection errors)."""
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            for page in pages:
                self.meter.add(s3_put_requests=1)
                for obj in page.get("Contents", []):
                    yield obj["Key"], obj["LastModified"]
        except ClientError as exc:
            raise StorageError(
                f"ListObjectsV2 s3://{self.bucket}/{prefix}: {exc}", transient=_s3_transient(exc)
            ) from exc
        except NETWORK_ERRORS as exc:
            raise StorageError(
                f"ListObjectsV2 s3://{self.bucket}/{prefix}: {exc}", transient=True
            ) from exc

    def upload_file(self, path: str, key: str, content_type: str) -> None:
        # Files here stay under the multipart threshold (8 MB): one PUT each.
        self.meter.add(s3_put_requests=1, s3_bytes_written=Path(path).stat().st_size)
        self._s3.upload_file(path, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def _put_json(self, key: str, body: bytes) -> None:
        self._put(key, body, "application/json")
