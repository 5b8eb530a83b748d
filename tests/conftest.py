"""Shared fixtures: in-process moto AWS with the ledger table built from template.yaml."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode
from moto import mock_aws

REPO_ROOT = Path(__file__).resolve().parents[1]
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
    """Every AWS call in the test goes to in-process moto.

    Executions are only recorded, never run, whatever an earlier test in this worker told
    moto (the local pipeline turns moto's Step Functions engine on process-wide).
    """
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
