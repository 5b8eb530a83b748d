"""Ingest reads exactly the event's object version, and a batch is its content (issue 19).

The data bucket is versioned (template.yaml's DataBucket VersioningConfiguration): each S3
event names the version it is about. Ingest reads that version, not the key's latest, and
derives the batch id from the SHA-256 of the bytes it streamed, not the ETag (which is not the
content's MD5 for multipart or SSE-KMS uploads)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import batch_id_for
from imagebatch.pipeline.ingest import IngestPorts, ManifestObject, ingest_manifest
from imagebatch.planning.stack_options import DeployedOptions

KEY = "manifests/shoes.jsonl"


class _Starts:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, batch_id: str, execution_input: dict[str, Any]) -> str:
        self.started.append(batch_id)
        return f"arn:aws:states:us-east-1:123456789012:execution:batch:{batch_id}"


@pytest.fixture
def world(s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str) -> Any:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    starter = _Starts()
    ports = IngestPorts(
        store=BatchStore(s3_client, s3_bucket),
        ledger=Ledger(dynamodb_client, ledger_table),
        starter=starter,
        catalogue=load_catalogue(),
    )
    stack = DeployedOptions(
        chunk_size=50,
        max_concurrency=2,
        prices=load_aws_prices().region("us-east-1"),
        shape=Shape(chunk_size=50, map_concurrency=2),
    )
    return s3_client, s3_bucket, ports, stack, starter


def _body(images: int) -> bytes:
    lines = [json.dumps({"id": f"i{n}", "prompt": f"a shoe, {n}"}) for n in range(images)]
    return ("\n".join(lines) + "\n").encode()


def test_each_event_runs_the_version_it_names(world: Any) -> None:
    s3, bucket, ports, stack, _ = world
    # GIVEN a manifest overwritten before its first event is handled
    v1 = s3.put_object(Bucket=bucket, Key=KEY, Body=_body(2))
    v2 = s3.put_object(Bucket=bucket, Key=KEY, Body=_body(3))

    # WHEN the first version's event is handled
    first = ingest_manifest(ManifestObject(bucket, KEY, v1["ETag"], v1["VersionId"]), ports, stack)
    # THEN it runs the first version's content, under the id of that content
    assert first.status == "STARTED" and first.images == 2
    assert first.batch_id == batch_id_for(bucket, KEY, hashlib.sha256(_body(2)).hexdigest())
    record = ports.ledger.get_batch(first.batch_id)
    assert record is not None and record.manifest_version_id == v1["VersionId"]
    assert record.manifest_sha256 == hashlib.sha256(_body(2)).hexdigest()

    # AND the second version's event runs the second version, once
    second = ingest_manifest(ManifestObject(bucket, KEY, v2["ETag"], v2["VersionId"]), ports, stack)
    assert second.status == "STARTED" and second.images == 3
    assert second.batch_id != first.batch_id


def test_the_same_bytes_under_another_etag_are_a_no_op(world: Any) -> None:
    s3, bucket, ports, stack, starter = world
    # GIVEN a manifest uploaded in one PUT and ingested
    put = s3.put_object(Bucket=bucket, Key=KEY, Body=_body(2))
    first = ingest_manifest(
        ManifestObject(bucket, KEY, put["ETag"], put["VersionId"]), ports, stack
    )
    assert first.status == "STARTED"

    # WHEN the same bytes are uploaded again by a tool that uses multipart (another ETag)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=KEY)
    part = s3.upload_part(
        Bucket=bucket, Key=KEY, UploadId=upload["UploadId"], PartNumber=1, Body=_body(2)
    )
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=KEY,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    assert done["ETag"] != put["ETag"]
    again = ingest_manifest(
        ManifestObject(bucket, KEY, done["ETag"], done["VersionId"]), ports, stack
    )

    # THEN it is the same batch: nothing new starts
    assert again.status == "DUPLICATE" and again.batch_id == first.batch_id
    # (a redelivery of a RUNNING batch starts it again under its id, which Step Functions
    # answers with the execution already running)
    assert set(starter.started) == {first.batch_id}
