"""S3 adapter: the only module that talks to the data bucket."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO, cast

from pydantic import BaseModel

from imagebatch.records import ChunkFile, ChunkRef

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def chunk_key(batch_id: str, chunk_id: str) -> str:
    return f"chunks/{batch_id}/{chunk_id}.json"


def chunk_index_key(batch_id: str) -> str:
    return f"chunks/{batch_id}/index.json"


def report_key(batch_id: str, name: str) -> str:
    return f"reports/{batch_id}/{name}"


def image_key(output_prefix: str, batch_id: str, image_id: str) -> str:
    return f"{output_prefix}{batch_id}/{image_id}.png"


class ObjectMissing(LookupError):
    pass


class BatchStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._s3 = client
        self.bucket = bucket

    def open_manifest(self, key: str) -> BinaryIO:
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        return cast(BinaryIO, body)

    def put_chunk(self, chunk: ChunkFile) -> ChunkRef:
        key = chunk_key(chunk.batch_id, chunk.chunk_id)
        self._put_json(key, chunk.model_dump_json(exclude_defaults=True).encode())
        return ChunkRef(chunk_id=chunk.chunk_id, key=key, images=len(chunk.images))

    def put_chunk_index(self, batch_id: str, refs: list[ChunkRef]) -> str:
        key = chunk_index_key(batch_id)
        self._put_json(key, json.dumps([ref.model_dump() for ref in refs]).encode())
        return key

    def get_chunk(self, key: str) -> ChunkFile:
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return ChunkFile.model_validate_json(body)

    def get_chunk_index(self, batch_id: str) -> list[ChunkRef]:
        key = chunk_index_key(batch_id)
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return [ChunkRef.model_validate(entry) for entry in json.loads(body)]

    def put_image(self, key: str, png: bytes, metadata: dict[str, str]) -> None:
        self._s3.put_object(
            Bucket=self.bucket, Key=key, Body=png, ContentType="image/png", Metadata=metadata
        )

    def put_json(self, key: str, body: bytes) -> None:
        self._put_json(key, body)

    def put_report(self, batch_id: str, name: str, document: BaseModel | dict[str, object]) -> str:
        key = report_key(batch_id, name)
        body = (
            document.model_dump_json(indent=2)
            if isinstance(document, BaseModel)
            else json.dumps(document, indent=2, default=str)
        )
        self._put_json(key, body.encode())
        return key

    def put_jsonl_report(self, batch_id: str, name: str, lines: Iterable[str]) -> str:
        key = report_key(batch_id, name)
        body = "".join(f"{line}\n" for line in lines).encode()
        self._s3.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )
        return key

    def get_bytes(self, key: str) -> bytes:
        return self.open_object(key).read()

    def open_object(self, key: str) -> BinaryIO:
        """A streaming body; ObjectMissing (not a botocore error) when there is no such key."""
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self._s3.exceptions.NoSuchKey:
            raise ObjectMissing(f"s3://{self.bucket}/{key} does not exist") from None
        return cast(BinaryIO, body)

    def put_bytes(self, key: str, body: bytes, content_type: str) -> str:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        return key

    def copy(self, source_key: str, key: str) -> None:
        """Server-side copy: metadata (prompt hash, seed, model) travels with the image."""
        self._s3.copy_object(
            Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source_key}
        )

    def list_keys(self, prefix: str) -> Iterator[str]:
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def upload_file(self, path: str, key: str, content_type: str) -> None:
        self._s3.upload_file(path, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def _put_json(self, key: str, body: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
