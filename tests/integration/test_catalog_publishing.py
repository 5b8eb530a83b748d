"""Catalog publishing only from what the catalog function wrote (issue 19).

Finalize's catalog hook publishes to catalogs/<name>/latest/ only a batch that ran the very
manifest the catalog function wrote that night: its key is under manifests/catalogs/<name>/
and its content (SHA-256) and version are the ones the function recorded in the ledger. A
batch whose tags merely claim a catalog night publishes nothing."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imagebatch.aws.catalog_state import CatalogState
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.catalog.nightly import CatalogRunEvent, publish_catalog_batch, run_catalogs
from imagebatch.models.batch_record import BatchRecord

SAMPLE = Path(__file__).resolve().parents[2] / "events" / "catalog"
NAME = "home-and-style"
NIGHT = "2026-12-07"


@pytest.fixture
def world(s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str) -> Any:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    for name in ("config.json", "products.csv"):
        s3_client.put_object(
            Bucket=s3_bucket, Key=f"catalogs/{NAME}/{name}", Body=(SAMPLE / name).read_bytes()
        )
    store = BatchStore(s3_client, s3_bucket)
    state = CatalogState(dynamodb_client, ledger_table)
    ledger = Ledger(dynamodb_client, ledger_table)
    return s3_client, s3_bucket, store, state, ledger


def _night(store: BatchStore, state: CatalogState) -> str:
    event = CatalogRunEvent(scheduled_time=datetime(2026, 12, 7, 2, tzinfo=UTC))
    (result,) = run_catalogs(event, store=store, state=state)
    assert result.manifest_key is not None
    return result.manifest_key


def _summary(key: str, body: bytes, version: str | None, run: str = NIGHT) -> BatchRecord:
    return BatchRecord(
        batch_id="forged",
        manifest_key=key,
        manifest_sha256=hashlib.sha256(body).hexdigest(),
        manifest_version_id=version,
        settings=json.dumps({"tags": {"catalog": NAME, "catalog_run": run}}),
    )


def test_the_catalog_function_records_the_manifest_it_wrote(world: Any) -> None:
    s3, bucket, store, state, _ = world
    key = _night(store, state)
    head = s3.get_object(Bucket=bucket, Key=key)
    body = head["Body"].read()
    night = state.night_manifest(NAME, NIGHT)
    assert night is not None
    assert night.key == key
    assert night.version_id == head["VersionId"]
    assert night.sha256 == hashlib.sha256(body).hexdigest()


def test_a_batch_that_only_claims_a_catalog_night_publishes_nothing(world: Any) -> None:
    s3, bucket, store, state, ledger = world
    key = _night(store, state)
    real = s3.get_object(Bucket=bucket, Key=key)
    real_body = real["Body"].read()
    forged = b'{"batch": {"tags": {"catalog": "home-and-style"}}}\n'
    cases = {
        # a user's manifest elsewhere, tagged as a (far future) night
        "elsewhere": _summary("manifests/team/forged.jsonl", forged, "v", run="9999-12-31"),
        # under the catalog prefix but not what the function wrote that night
        "other content": _summary(key, forged, real["VersionId"]),
        # the night's key and bytes, but another version of the object
        "other version": _summary(key, real_body, "another-version"),
        # a night the function never wrote
        "no such night": _summary(key, real_body, real["VersionId"], run="9999-12-31"),
    }
    for case, summary in cases.items():
        # THEN nothing is read of the batch (it has no chunks) and nothing is published
        published = publish_catalog_batch(
            f"forged-{case.replace(' ', '-')}", summary, store=store, ledger=ledger, state=state
        )
        assert published == 0, case
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"catalogs/{NAME}/latest/")
    assert listing.get("KeyCount", 0) == 0


class _Starts:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, batch_id: str, execution_input: dict[str, Any]) -> str:
        self.started.append(batch_id)
        return f"arn:aws:states:us-east-1:123456789012:execution:batch:{batch_id}"


def _ingest(world: Any, key: str, tags: dict[str, str]) -> Any:
    from imagebatch.costs.estimate import Shape
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch.models.bedrock_models import load_catalogue
    from imagebatch.pipeline.ingest import IngestPorts, ManifestObject, ingest_manifest
    from imagebatch.planning.stack_options import DeployedOptions

    s3, bucket, store, _, ledger = world
    starter = _Starts()
    ports = IngestPorts(store=store, ledger=ledger, starter=starter, catalogue=load_catalogue())
    stack = DeployedOptions(
        chunk_size=50,
        max_concurrency=2,
        prices=load_aws_prices().region("us-east-1"),
        shape=Shape(chunk_size=50, map_concurrency=2),
    )
    header = {"batch": {"tags": tags}}
    body = f"{json.dumps(header)}\n{json.dumps({'id': 'a', 'prompt': 'a lamp'})}\n".encode()
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)
    outcome = ingest_manifest(
        ManifestObject(bucket, key, put["ETag"], put["VersionId"]), ports, stack
    )
    return outcome, starter


def test_a_catalog_tag_naming_no_catalog_is_refused_at_ingest(world: Any) -> None:
    _, _, _, _, ledger = world
    cases = {
        # a manifest under the catalog prefix whose catalog has no config (deleted, or never
        # made): finalize would fail reading it after the batch had spent
        "no config": ("manifests/catalogs/ghost/2026-12-07.jsonl", "ghost"),
        # a catalog's folder, tagged as another catalog
        "other folder": (f"manifests/catalogs/{NAME}/x.jsonl", "ghost"),
    }
    for case, (key, name) in cases.items():
        # WHEN ingest reads a manifest whose catalog tag names it
        outcome, starter = _ingest(world, key, {"catalog": name, "catalog_run": NIGHT})
        # THEN the batch is refused before anything runs, saying why
        assert outcome.status == "REJECTED", case
        assert starter.started == [], case
        assert "ghost" in (outcome.message or ""), (case, outcome.message)
        record = ledger.get_batch(outcome.batch_id)
        assert record is not None and record.status == "REJECTED", case
    # AND a real catalog's manifest in its own folder still runs
    outcome, starter = _ingest(
        world, f"manifests/catalogs/{NAME}/y.jsonl", {"catalog": NAME, "catalog_run": NIGHT}
    )
    assert outcome.status == "STARTED", outcome.message
