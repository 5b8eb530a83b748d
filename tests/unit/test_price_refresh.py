"""`imagebatch prices refresh`: Price List documents parsed (recorded in GetProducts' real
shape, served through botocore's Stubber, which validates requests and answers against the
pricing service model), the data files rewritten with source, date and confirmed_by."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from imagebatch_cli.app import app
from typer.testing import CliRunner

import imagebatch
from imagebatch.aws.price_list import PriceList, model_lifecycles
from imagebatch.costs.price_refresh import (
    SERVICE_QUERIES,
    dump_aws_prices,
    dump_bedrock_models,
    parse_product,
    pick_rate,
    refresh_aws_prices,
    refresh_bedrock_models,
)
from imagebatch.costs.prices import AwsPrices
from imagebatch.models.bedrock_models import ModelCatalogue

runner = CliRunner()
TODAY = date(2026, 12, 7)
ARN_PREFIX = "arn:aws:bedrock:us-west-2::foundation-model/"


def _entry(
    attributes: dict[str, str],
    tiers: list[tuple[str, str, str]],
    *,
    family: str = "Serverless",
    sku: str = "SKU1",
) -> str:
    """One PriceList entry as GetProducts returns it: a JSON string. tiers: (usd, unit, begin)."""
    dimensions = {
        f"{sku}.JRTCKXETXF.{n}": {
            "unit": unit,
            "endRange": "Inf",
            "description": f"${usd} per {unit}",
            "appliesTo": [],
            "rateCode": f"{sku}.JRTCKXETXF.{n}",
            "beginRange": begin,
            "pricePerUnit": {"USD": usd},
        }
        for n, (usd, unit, begin) in enumerate(tiers)
    }
    return json.dumps(
        {
            "product": {"productFamily": family, "attributes": attributes, "sku": sku},
            "serviceCode": attributes.get("servicecode", ""),
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": dimensions,
                        "sku": sku,
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


LAMBDA_ARM = _entry(
    {
        "servicecode": "AWSLambda",
        "regionCode": "us-east-1",
        "group": "AWS-Lambda-Duration-ARM",
        "usagetype": "USE1-Lambda-GB-Second-ARM",
    },
    [("0.0000133334", "Lambda-GB-Second", "0"), ("0.0000120001", "Lambda-GB-Second", "7.5E9")],
)
SQS = _entry(
    {
        "servicecode": "AWSQueueService",
        "regionCode": "us-east-1",
        "queueType": "Standard",
        "usagetype": "Requests-Tier1",
    },
    [("0.0000000000", "Requests", "0"), ("0.0000004000", "Requests", "1000000")],
    family="API Request",
)


def test_a_price_list_entry_parses_to_its_rate_after_the_free_tier() -> None:
    product = parse_product(SQS)
    assert product.attributes["queueType"] == "Standard"
    rate = product.rate()
    assert rate is not None and rate.usd == Decimal("0.0000004") and rate.unit == "Requests"
    arm = parse_product(LAMBDA_ARM).rate()
    assert arm is not None and arm.usd == Decimal("0.0000133334")  # the first paid tier


def test_a_query_takes_one_rate_and_refuses_an_ambiguous_one() -> None:
    query = SERVICE_QUERIES["lambda_arm64_gb_second"]
    assert pick_rate([parse_product(LAMBDA_ARM)], query) == Decimal("0.0000133334")
    other = _entry({"group": "AWS-Lambda-Duration-ARM"}, [("0.00002", "Lambda-GB-Second", "0")])
    assert pick_rate([parse_product(LAMBDA_ARM), parse_product(other)], query) is None
    assert pick_rate([parse_product(SQS)], query) is None  # wrong group


def test_the_data_files_round_trip_byte_for_byte() -> None:
    data = resources.files("imagebatch.data")
    for name, dump in (
        ("aws_prices.json", dump_aws_prices),
        ("bedrock_models.json", dump_bedrock_models),
    ):
        text = data.joinpath(name).read_text("utf-8")
        assert dump(json.loads(text)) == text


def test_refresh_marks_what_it_confirmed_and_keeps_the_rest() -> None:
    text = resources.files("imagebatch.data").joinpath("aws_prices.json").read_text("utf-8")
    document = json.loads(text)
    changed = _entry(
        {"regionCode": "us-west-2", "group": "AWS-Lambda-Duration-ARM"},
        [("0.0000133335", "Lambda-GB-Second", "0")],
    )
    lines = refresh_aws_prices(
        document,
        "us-west-2",
        {"lambda_arm64_gb_second": [parse_product(changed)], "lambda_request": []},
        TODAY,
    )
    by_name = {line.name: line.outcome for line in lines}
    assert by_name["lambda_arm64_gb_second"] == "0.0000133334 -> 0.0000133335"
    assert "kept as it was" in by_name["lambda_request"]
    assert "attributes assumed" in by_name["sns_publish"]
    prices = AwsPrices.model_validate(document).region("us-west-2")
    arm = prices.service("lambda_arm64_gb_second")
    assert arm.confirmed and arm.confirmed_by == "pricing:GetProducts 2026-12-07"
    assert arm.usd == Decimal("0.0000133335") and arm.retrieved == TODAY
    assert "pricing:GetProducts" in arm.source
    request = prices.service("lambda_request")
    assert not request.confirmed and request.confirmed_by is None  # untouched


def test_bedrock_lifecycles_and_an_unambiguous_image_price() -> None:
    text = resources.files("imagebatch.data").joinpath("bedrock_models.json").read_text("utf-8")
    document = json.loads(text)
    ultra = _entry(
        {"servicename": "Stable Image Ultra (Amazon Bedrock Edition)", "regionCode": "us-west-2"},
        [("0.14", "Images", "0")],
    )
    lines = refresh_bedrock_models(
        document,
        "us-west-2",
        [parse_product(ultra)],
        {"stability.stable-image-ultra-v1:1": "ACTIVE", "amazon.nova-canvas-v1:0": "LEGACY"},
        TODAY,
    )
    by_name = {line.name: line.outcome for line in lines}
    assert by_name["stability.stable-image-ultra-v1:1 price"] == "unchanged"
    assert by_name["stability.stable-image-ultra-v1:1 lifecycle"] == "lifecycle unchanged"
    assert "several tiers" in by_name["amazon.nova-canvas-v1:0 price"]
    assert "not listed" in by_name["stability.sd3-5-large-v1:0 lifecycle"]
    catalogue = ModelCatalogue.model_validate(document)
    ultra_spec = catalogue.get("stability.stable-image-ultra-v1:1")
    assert ultra_spec is not None
    assert ultra_spec.prices[0].confirmed_by == "pricing:GetProducts 2026-12-07"
    assert ultra_spec.lifecycle.confirmed_by == "bedrock:ListFoundationModels 2026-12-07"


@pytest.fixture
def stubbed(aws_credentials: None) -> Iterator[tuple[Stubber, Stubber]]:
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
