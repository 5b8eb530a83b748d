"""Which uploads start a batch: the template's S3 notifications against what validate accepts.

`imagebatch validate` (and ingest) accept a manifest by its extension, in any letter case
(.jsonl, .ndjson, .csv; FORMAT_BY_EXTENSION). S3 matches a notification's prefix and suffix
rules byte for byte, case-sensitively (Amazon S3 User Guide, "Configuring event notifications
using object key name filtering"). So every name validate accepts must match a notification,
and a name that starts ingest but is not a manifest must be refused there, visibly (a REJECTED
batch record with the reason, and reports/<batch-id>/errors.jsonl), never left silent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode
from support.ledger_summary import as_item

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import FORMAT_BY_EXTENSION, format_for_key
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import batch_id_for
from imagebatch.pipeline.ingest import IngestPorts, ManifestObject, ingest_manifest
from imagebatch.planning.stack_options import DeployedOptions

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
REFUSED_NAMES = ("notes.txt", "batch.json", "README", "batch.jsonl.gz", "batch.csv.bak")


def _notification_rules() -> list[dict[str, str]]:
    decoded, matches = decode(str(TEMPLATE_PATH))
    assert not matches and decoded is not None
    events = decoded["Resources"]["IngestFunction"]["Properties"]["Events"]
    rules = [
        {rule["Name"]: rule["Value"] for rule in event["Properties"]["Filter"]["S3Key"]["Rules"]}
        for event in events.values()
        if event["Type"] == "S3"
    ]
    assert rules, "IngestFunction has no S3 event"
    return rules


def starts_ingest(key: str) -> bool:
    """Whether S3 invokes ingest for an object created at `key` (case-sensitive rules)."""
    return any(
        key.startswith(rule.get("prefix", "")) and key.endswith(rule.get("suffix", ""))
        for rule in _notification_rules()
    )


def validate_accepts(key: str) -> bool:
    try:
        format_for_key(key)
    except ManifestError:
        return False
    return True


def _case_variants(extension: str) -> set[str]:
    return {
        "".join(chars) for chars in itertools.product(*((c.lower(), c.upper()) for c in extension))
    }


ACCEPTED_NAMES = sorted(
    f"batch{variant}" for ext in FORMAT_BY_EXTENSION for variant in _case_variants(ext)
)


def test_the_names_below_are_what_validate_accepts() -> None:
    # Guards the two lists the tests below draw from.
    assert all(validate_accepts(f"manifests/{name}") for name in ACCEPTED_NAMES)
    assert not any(validate_accepts(f"manifests/{name}") for name in REFUSED_NAMES)
    assert {".jsonl", ".ndjson", ".csv", ".JSONL", ".NDJSON", ".Csv"} <= {
        Path(name).suffix for name in ACCEPTED_NAMES
    }


@pytest.mark.parametrize("name", ACCEPTED_NAMES)
def test_every_name_validate_accepts_starts_a_batch(name: str) -> None:
    for key in (f"manifests/{name}", f"manifests/catalogs/home/{name}", f"manifests/a b/{name}"):
        assert starts_ingest(key), f"{key} passes validate but starts no batch"


def test_outside_manifests_nothing_starts() -> None:
    for key in ("reports/b/batch.jsonl", "chunks/b/00000.json", "outputs/b/x.png", "batch.csv"):
        assert not starts_ingest(key), key


@pytest.fixture
def storage(s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str) -> Any:
    return BatchStore(s3_client, s3_bucket), Ledger(dynamodb_client, ledger_table), s3_bucket


class _NoStart:
    def start(self, batch_id: str, execution_input: dict[str, Any]) -> str:
        raise AssertionError("a refused upload must not start an execution")


@pytest.mark.parametrize("name", [n for n in REFUSED_NAMES if starts_ingest(f"manifests/{n}")])
def test_a_name_that_starts_ingest_but_is_no_manifest_is_refused_visibly(
    storage: Any, name: str
) -> None:
    # GIVEN an upload under manifests/ whose name validate refuses
    store, ledger, bucket = storage
    key = f"manifests/{name}"
    body = b'{"id": "a", "prompt": "b"}\n'
    etag = boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=bucket, Key=key, Body=body
    )["ETag"]

    # WHEN ingest handles its notification
    outcome = ingest_manifest(
        ManifestObject(bucket, key, etag),
        IngestPorts(store=store, ledger=ledger, starter=_NoStart(), catalogue=load_catalogue()),
        DeployedOptions(
            chunk_size=50,
            max_concurrency=2,
            prices=load_aws_prices().region("us-east-1"),
            shape=Shape(chunk_size=50, map_concurrency=2),
        ),
    )

    # THEN the batch is REJECTED with a reason that names the accepted extensions...
    batch_id = batch_id_for(bucket, key, hashlib.sha256(body).hexdigest())
    assert outcome.status == "REJECTED" and outcome.batch_id == batch_id
    for extension in FORMAT_BY_EXTENSION:
        assert extension in outcome.message
    record = as_item(ledger.get_batch(batch_id))
    assert record is not None and record["status"] == "REJECTED"
    assert record["rejection"] == outcome.message
    # ...and the user finds it in the batch's errors report
    body = store._s3.get_object(Bucket=bucket, Key=f"reports/{batch_id}/errors.jsonl")["Body"]
    error = json.loads(body.read().decode().splitlines()[0])
    assert error["field"] == "(manifest)" and "extension" in error["reason"]
