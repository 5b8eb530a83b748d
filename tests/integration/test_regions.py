"""Regions: the prices imagebatch has, the models each region offers, where it deploys.

Every Lambda prices what it does with src/imagebatch/data/aws_prices.json for the stack's
region (AWS_REGION), and Bedrock serves each model in some regions only. A stack in a region
without prices, or a batch for a model its region does not serve, must be refused at ingest
with a message, never crash or fail image by image on AWS.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode
from imagebatch_cli.app import app
from imagebatch_cli.exit_codes import ExitCode
from imagebatch_local.cloud.lambda_runtime import LocalLambdaContext
from imagebatch_local.template import REGION as LOCAL_REGION
from support.ledger_summary import as_item
from typer.testing import CliRunner

from imagebatch.aws.clients import reset_clients
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import batch_id_for
from imagebatch.pipeline.ingest import IngestPorts, ManifestObject, ingest_manifest
from imagebatch.planning.stack_options import DeployedOptions

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "events" / "manifests" / "demo.jsonl"
NEW_REGIONS = ("us-west-2", "eu-west-1")


def _deploy_region() -> str:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    region: str = config["default"]["deploy"]["parameters"]["region"]
    return region


# --- prices ----------------------------------------------------------------------------------


@pytest.mark.parametrize("region", NEW_REGIONS)
def test_prices_cover_the_deploy_region_and_an_eu_region(region: str) -> None:
    prices = load_aws_prices()
    reference = {price.name for price in prices.region("us-east-1").services}
    regional = prices.region(region)
    # Every service price the ledger counts with, each with its source and date.
    assert {price.name for price in regional.services} == reference
    for price in regional.services:
        assert price.source.startswith("https://") and price.retrieved.year >= 2026
        if not price.confirmed:
            assert "not confirmed" in price.source, price.name


def _ledger_table_shape() -> dict[str, Any]:
    """LedgerTable's keys, indexes and billing mode as template.yaml declares them."""
    decoded, _ = decode(str(ROOT / "template.yaml"))
    assert decoded is not None
    props = decoded["Resources"]["LedgerTable"]["Properties"]
    keys = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")
    shape: dict[str, Any] = json.loads(json.dumps({key: props[key] for key in keys}))
    return shape


# --- ingest in the stack's region --------------------------------------------------------------


@pytest.fixture
def ingest_in(aws: None, monkeypatch: pytest.MonkeyPatch, new_ledger_table: Any) -> Iterator[Any]:
    """Runs the ingest handler, as deployed in a region, on the demo manifest."""

    def run(region: str) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
        monkeypatch.setenv("AWS_REGION", region)
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
        bucket, table = f"imagebatch-data-{region}", f"ledger-{region}"
        env = {
            "DATA_BUCKET": bucket,
            "LEDGER_TABLE": table,
            "STATE_MACHINE_ARN": f"arn:aws:states:{region}:123456789012:stateMachine:x-batch",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "imagebatch",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_clients()
        s3: Any = boto3.client("s3", region_name=region)
        if region == "us-east-1":  # S3 refuses a LocationConstraint of us-east-1
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )
        boto3.client("dynamodb", region_name=region).create_table(
            TableName=table, **_ledger_table_shape()
        )
        key = "manifests/demo.jsonl"
        etag = s3.put_object(Bucket=bucket, Key=key, Body=DEMO.read_bytes())["ETag"]
        record = json.loads((ROOT / "events" / "s3-manifest-put.json").read_text())["Records"][0]
        record["awsRegion"] = region
        record["s3"]["bucket"].update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
        record["s3"]["object"].update(key=key, eTag=etag)
        # an unversioned bucket's event names no version
        record["s3"]["object"].pop("versionId")
        spec = importlib.util.spec_from_file_location(
            f"ingest_{region}", ROOT / "functions" / "ingest" / "app.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        context = LocalLambdaContext(function_name="ingest", memory_limit_in_mb=1024, timeout_s=900)
        outcome = module.handler({"Records": [record]}, context)["batches"][0]
        batch_id = batch_id_for(bucket, key, hashlib.sha256(DEMO.read_bytes()).hexdigest())
        summary = as_item(
            Ledger(boto3.client("dynamodb", region_name=region), table).get_batch(batch_id)
        )
        errors = None
        if summary is not None and summary.get("errors_key"):
            body = s3.get_object(Bucket=bucket, Key=summary["errors_key"])["Body"].read()
            errors = body.decode()
        return outcome, summary, errors

    yield run
    reset_clients()


def test_a_region_without_prices_is_refused_at_ingest_with_a_message(ingest_in: Any) -> None:
    # GIVEN a stack deployed where imagebatch has no prices (ap-south-1)
    # WHEN a manifest is dropped in its bucket
    outcome, summary, errors = ingest_in("ap-south-1")

    # THEN ingest refuses the batch, naming the region and the regions it can price
    assert outcome["status"] == "REJECTED"
    for region in ("ap-south-1", "us-east-1", *NEW_REGIONS):
        assert region in outcome["message"]
    assert summary is not None and summary["status"] == "REJECTED"
    assert errors is not None and "ap-south-1" in errors


# --- model regions -----------------------------------------------------------------------------


def test_every_model_records_the_regions_that_offer_it() -> None:
    for spec in load_catalogue().models:
        availability = spec.availability
        assert availability.regions, spec.model_id
        assert availability.source.startswith("https://"), spec.model_id
        assert availability.retrieved.year >= 2026, spec.model_id


def test_ingest_refuses_a_model_the_stack_region_does_not_offer(ingest_in: Any) -> None:
    # GIVEN the demo manifest (SD3.5 Large) dropped in a stack in a region without it
    default = load_catalogue().get(load_catalogue().default_model_id)
    assert default is not None
    elsewhere = next(r for r in load_aws_prices().regions if r not in default.availability.regions)
    outcome, summary, errors = ingest_in(elsewhere)

    # THEN nothing runs, and each line's error names the regions that offer the model
    assert outcome["status"] == "REJECTED"
    assert summary is not None and summary["status"] == "REJECTED"
    assert errors is not None
    first = json.loads(errors.splitlines()[0])
    assert first["field"] == "model"
    for region in default.availability.regions:
        assert region in first["reason"]


def test_validate_refuses_a_model_the_region_does_not_offer(tmp_path: Path) -> None:
    default = load_catalogue().get(load_catalogue().default_model_id)
    assert default is not None
    elsewhere = next(r for r in load_aws_prices().regions if r not in default.availability.regions)
    refused = CliRunner().invoke(app, ["validate", str(DEMO), "--region", elsewhere])
    # every line names a model the region does not serve: ingest would reject the batch
    assert refused.exit_code == ExitCode.REJECTED
    assert default.availability.regions[0] in refused.output
    accepted = CliRunner().invoke(
        app, ["validate", str(DEMO), "--region", default.availability.regions[0]]
    )
    assert accepted.exit_code == 0, accepted.output


def test_the_stack_deploys_where_the_default_model_runs() -> None:
    region = _deploy_region()
    default = load_catalogue().get(load_catalogue().default_model_id)
    assert default is not None
    assert region in default.availability.regions
    assert load_aws_prices().region(region) is not None


def test_the_local_aws_rehearses_the_deploy_region() -> None:
    assert _deploy_region() == LOCAL_REGION


def test_a_sagemaker_batch_is_refused_where_its_instance_has_no_price(
    aws: None, s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a stack with the SageMaker endpoint in a region that prices no instance type
    assert not load_aws_prices().region("eu-west-1").sagemaker_instances
    header = {"batch": {"backend": "sagemaker"}}
    item = {"id": "a", "prompt": "b", "width": 512, "height": 512}
    body = f"{json.dumps(header)}\n{json.dumps(item)}\n".encode()
    etag = s3_client.put_object(Bucket=s3_bucket, Key="manifests/s.jsonl", Body=body)["ETag"]

    # WHEN its manifest is ingested
    outcome = ingest_manifest(
        ManifestObject(s3_bucket, "manifests/s.jsonl", etag),
        IngestPorts(
            store=BatchStore(s3_client, s3_bucket),
            ledger=Ledger(dynamodb_client, ledger_table),
            starter=None,  # type: ignore[arg-type]  # a refused batch starts nothing
            catalogue=load_catalogue(),
        ),
        DeployedOptions(
            chunk_size=50,
            max_concurrency=2,
            prices=load_aws_prices().region("eu-west-1"),
            shape=Shape(chunk_size=50, map_concurrency=2),
            # an endpoint is deployed, but its instance type has no price here
            sagemaker_unpriced=True,
            region="eu-west-1",
        ),
    )

    # THEN it is refused, saying why, before anything is charged
    assert outcome.status == "REJECTED"
    assert "no price" in outcome.message and "'bedrock'" in outcome.message
