"""`imagebatch prices refresh` through botocore's Stubber, which validates each request and
each recorded answer against the pricing and bedrock service models (moto has no Price List)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from imagebatch_cli.app import app
from support.price_list import ARN_PREFIX, LAMBDA_ARM
from typer.testing import CliRunner

import imagebatch
from imagebatch.aws.price_list import PriceList, model_lifecycles
from imagebatch.costs.price_refresh import SERVICE_QUERIES

runner = CliRunner()


@pytest.fixture
def stubbed(no_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stubber, Stubber]]:
    """Clients that answer only what the test queued (botocore's Stubber); dummy keys so
    botocore signs, and nothing leaves the process."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    pricing = boto3.client("pricing", region_name="us-east-1")
    bedrock = boto3.client("bedrock", region_name="us-east-1")
    with Stubber(pricing) as p, Stubber(bedrock) as b:
        yield p, b


def test_the_adapter_pages_through_get_products(stubbed: tuple[Stubber, Stubber]) -> None:
    stub, _ = stubbed
    filters = [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"},
        {"Type": "TERM_MATCH", "Field": "group", "Value": "AWS-Lambda-Duration-ARM"},
    ]
    asked = {"ServiceCode": "AWSLambda", "FormatVersion": "aws_v1", "Filters": filters}
    stub.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": [LAMBDA_ARM], "NextToken": "t2"},
        {**asked, "MaxResults": 100},
    )
    stub.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": []},
        {**asked, "MaxResults": 100, "NextToken": "t2"},
    )
    client: Any = stub.client
    found = PriceList(client).answer(SERVICE_QUERIES["lambda_arm64_gb_second"], "us-east-1")
    assert [p.attributes["group"] for p in found] == ["AWS-Lambda-Duration-ARM"]
    stub.assert_no_pending_responses()


def test_lifecycles_come_from_list_foundation_models(stubbed: tuple[Stubber, Stubber]) -> None:
    _, stub = stubbed
    stub.add_response(
        "list_foundation_models",
        {
            "modelSummaries": [
                {
                    "modelArn": f"{ARN_PREFIX}amazon.nova-canvas-v1:0",
                    "modelId": "amazon.nova-canvas-v1:0",
                    "modelLifecycle": {"status": "LEGACY"},
                }
            ]
        },
        {},
    )
    client: Any = stub.client
    assert model_lifecycles(client) == {"amazon.nova-canvas-v1:0": "LEGACY"}


def test_prices_refresh_reports_then_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stubbed: tuple[Stubber, Stubber]
) -> None:
    pricing, bedrock = stubbed
    data = tmp_path / "data"
    shutil.copytree(Path(imagebatch.__file__).parent / "data", data)
    monkeypatch.setattr("imagebatch_cli.commands.prices._data_dir", lambda: data)
    monkeypatch.setattr("imagebatch.aws.session.AwsSession.pricing", lambda self: pricing.client)
    monkeypatch.setattr("imagebatch.aws.session.AwsSession.bedrock", lambda self: bedrock.client)

    def answer(write: bool) -> Any:
        # 17 service prices, 3 instance types, 2 Bedrock service codes: only Lambda arm64 answers
        for name in SERVICE_QUERIES:
            found = [LAMBDA_ARM] if name == "lambda_arm64_gb_second" else []
            pricing.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": found})
        for _ in range(3 + 2):
            pricing.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": []})
        bedrock.add_response("list_foundation_models", {"modelSummaries": []})
        args = ["--region", "us-east-1", "prices", "refresh", "--region", "us-east-1"]
        return runner.invoke(app, [*args, "--write"] if write else args)

    before = (data / "aws_prices.json").read_text("utf-8")
    shown = answer(write=False)
    assert shown.exit_code == 0, shown.output
    assert "lambda_arm64_gb_second" in shown.output and "nothing written" in shown.output
    assert (data / "aws_prices.json").read_text("utf-8") == before
    written = answer(write=True)
    assert written.exit_code == 0, written.output
    after = json.loads((data / "aws_prices.json").read_text("utf-8"))
    (arm,) = [
        p
        for p in after["regions"]["us-east-1"]["services"]
        if p["name"] == "lambda_arm64_gb_second"
    ]
    assert arm["confirmed_by"] == f"pricing:GetProducts {date.today()}"
    changed = [
        a
        for a, b in zip(
            before.splitlines(), (data / "aws_prices.json").read_text().splitlines(), strict=True
        )
        if a != b
    ]
    assert len(changed) == 1  # one line a price: only the confirmed one changed
