"""In-process moto AWS with the ledger table built from template.yaml, and a batch exported
as `imagebatch local run` leaves it: fixtures for tests/integration (its conftest.py imports
them; tests/unit must not, it is pure)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode
from moto import mock_aws

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
AWS_REGION = "us-east-1"
LEDGER_TABLE_NAME = "imagebatch-ledger-test"
DATA_BUCKET_NAME = "imagebatch-data-test"
# The LedgerTable properties a CreateTable call takes; SSE/PITR are not table-shape.
_TABLE_SHAPE_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")


def ledger_table_properties() -> dict[str, Any]:
    """LedgerTable's own key schema, indexes and billing mode, as template.yaml declares them."""
    decoded, matches = decode(str(TEMPLATE_PATH))
    assert not matches, f"template.yaml does not parse: {matches}"
    assert decoded is not None
    properties = decoded["Resources"]["LedgerTable"]["Properties"]
    # Round-trip through JSON: cfn-lint's str/dict node subclasses become plain values.
    shape: dict[str, Any] = json.loads(
        json.dumps({key: properties[key] for key in _TABLE_SHAPE_KEYS if key in properties})
    )
    return shape


@pytest.fixture
def ledger_table_shape() -> dict[str, Any]:
    """template.yaml's LedgerTable properties, for a test that creates the table itself."""
    return ledger_table_properties()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region, and no endpoint or profile that could reach real AWS."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("S3", "DYNAMODB", "STEPFUNCTIONS", "SFN", "BEDROCK_RUNTIME"):
        monkeypatch.delenv(f"AWS_ENDPOINT_URL_{name}", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)


@pytest.fixture
def aws(aws_credentials: None) -> Iterator[None]:
    """Every AWS call in the test goes to in-process moto, which records Step Functions
    executions without running them. Said explicitly: the local AWS turns on moto's
    process-wide execute_state_machine switch, and a test that ran it earlier in this worker
    would otherwise leave executions running (and racing the test) in threads."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": False}}):
        yield


@pytest.fixture
def s3_client(aws: None) -> Any:
    return boto3.client("s3", region_name=AWS_REGION)


@pytest.fixture
def dynamodb_client(aws: None) -> Any:
    return boto3.client("dynamodb", region_name=AWS_REGION)


@pytest.fixture
def sfn_client(aws: None) -> Any:
    return boto3.client("stepfunctions", region_name=AWS_REGION)


def create_ledger_table(dynamodb_client: Any, name: str = LEDGER_TABLE_NAME) -> str:
    """Create a table shaped like template.yaml's LedgerTable; returns its name."""
    dynamodb_client.create_table(TableName=name, **ledger_table_properties())
    return name


@pytest.fixture
def ledger_table(dynamodb_client: Any) -> str:
    """The ledger table, created from template.yaml's LedgerTable; returns its name."""
    return create_ledger_table(dynamodb_client)


@pytest.fixture
def new_ledger_table(dynamodb_client: Any) -> Callable[[str], str]:
    """Creates another ledger table by name, for tests that need a fresh one per example."""
    return lambda name: create_ledger_table(dynamodb_client, name)


@pytest.fixture
def regional_ledger_table(aws: None) -> Callable[[str, str], str]:
    """Creates a ledger table by name in another region than the default one."""
    return lambda name, region: create_ledger_table(
        boto3.client("dynamodb", region_name=region), name
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """An empty data bucket in us-east-1; returns its name."""
    s3_client.create_bucket(Bucket=DATA_BUCKET_NAME)
    return DATA_BUCKET_NAME


# -- a batch as `imagebatch local run` leaves it on disk, for the CLI's tests -----------------

EXPORT_MODEL = "stability.sd3-5-large-v1:0"


def _export_outcome(image_id: str, *, ok: bool) -> Any:
    from imagebatch.models.records import FailureClass, ImageOutcome

    return ImageOutcome(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        chunk_id="00000",
        status="SUCCEEDED" if ok else "FAILED",
        model=EXPORT_MODEL,
        backend="bedrock",
        seed=1,
        prompt_sha256="0" * 64,
        cost_micro_usd=80_000 if ok else 0,
        failure_class=None if ok else FailureClass.CONTENT_FILTERED,
        failure_reason=None if ok else "Filter reason: prompt",
    )


ExportBatch = Callable[..., dict[str, Any]]


@pytest.fixture
def export_batch(aws_credentials: None) -> ExportBatch:
    """Writes a settled batch through the real Ledger (its own moto, closed after) and exports
    its partition under `out` exactly as `local run` does; returns the batch's summary."""

    def export(out: Path, batch_id: str = "demo-0123456789ab", **options: Any) -> dict[str, Any]:
        with mock_aws():
            return _export(
                boto3.client("dynamodb", region_name=AWS_REGION), out, batch_id, **options
            )

    return export


def _export(
    client: Any,
    out: Path,
    batch_id: str,
    *,
    made: int = 3,
    failed: int = 1,
    tags: dict[str, str] | None = None,
    created_at: str = "2026-11-22T10:00:00.000+00:00",
    max_cost_micro_usd: int | None = 5_000_000,
) -> dict[str, Any]:
    from imagebatch_local.ledger_export import ledger_export_path, write_ledger_export

    from imagebatch.aws.dynamo_items import batch_pk, from_item
    from imagebatch.aws.ledger import Ledger
    from imagebatch.models.records import BatchStatus
    from support.ledger_summary import as_item

    table = create_ledger_table(client, "export-ledger")
    ledger = Ledger(client, table)
    tags = tags if tags is not None else {"project": "demo"}
    ledger.create_batch(
        batch_id,
        {
            "status": "RUNNING",
            "backend": "bedrock",
            "models": [EXPORT_MODEL],
            "images_total": made + failed,
            "tags": tags,
            "created_at": created_at,
            "estimate_micro_usd": 80_000 * (made + failed) + 900,
            "max_cost_micro_usd": max_cost_micro_usd,
            "overhead_reserve_micro_usd": 500,
            "use_sfn_transitions": 7,
            "use_lambda_requests": 4,
            "use_lambda_mb_ms": 2_000_000,
            "use_s3_put_requests": made + 3,
            "use_s3_bytes_written": 40_000,
        },
    )
    outcomes = [_export_outcome(f"img-{i}-1", ok=True) for i in range(made)]
    outcomes += [_export_outcome(f"bad-{i}-1", ok=False) for i in range(failed)]
    if outcomes:
        ledger.commit_images(batch_id, outcomes, tags=tags)
    status = BatchStatus.PARTIAL if failed and made else BatchStatus.SUCCEEDED
    if failed and not made:
        status = BatchStatus.FAILED
    summary = ledger.settle_batch(batch_id, status, {}, {"spent_micro_usd": 300})
    response = client.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": batch_pk(batch_id)}},
    )
    others = [from_item(item) for item in response["Items"]]
    others = [record for record in others if record["sk"] != "SUMMARY"]
    write_ledger_export(ledger_export_path(out, batch_id), summary, others)
    return as_item(summary)
