"""`imagebatch prices refresh`, the pure part: Price List documents (in GetProducts' real
shape) parsed, the data files rewritten with source, date and confirmed_by. The adapter and
the command on botocore's Stubber: tests/integration/test_price_list.py."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from importlib import resources

from support.price_list import LAMBDA_ARM, price_list_entry

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

TODAY = date(2026, 12, 7)


SQS = price_list_entry(
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
    other = price_list_entry(
        {"group": "AWS-Lambda-Duration-ARM"}, [("0.00002", "Lambda-GB-Second", "0")]
    )
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
    changed = price_list_entry(
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
    ultra = price_list_entry(
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
