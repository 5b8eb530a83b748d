"""The AWS price data file: every price has a source and a date, and lookups say what is known."""

from __future__ import annotations

from decimal import Decimal

import pytest

from imagebatch.costs.prices import load_aws_prices


def test_every_price_has_a_source_and_a_date() -> None:
    prices = load_aws_prices()
    for region in prices.regions.values():
        dated = [(p.source, p.retrieved) for p in region.services] + [
            (p.source, p.retrieved) for p in region.sagemaker_instances
        ]
        for source, retrieved in dated:
            assert source.startswith("https://"), source
            assert retrieved.year >= 2026, source


def test_inf2_price_per_second_is_exact() -> None:
    inf2 = load_aws_prices().region("us-east-1").instance("ml.inf2.xlarge")
    assert inf2.usd_per_hour == Decimal("0.99")
    assert inf2.micro_usd_per_second * 3600 == Decimal(990_000)


def test_unknown_lookups_name_what_is_known() -> None:
    region = load_aws_prices().region("us-east-1")
    with pytest.raises(KeyError, match=r"ml\.inf2\.xlarge"):
        region.instance("ml.p5.48xlarge")
    with pytest.raises(KeyError, match="stepfunctions_standard_transition"):
        region.service("nope")
    with pytest.raises(KeyError, match="us-east-1"):
        load_aws_prices().region("xx-nowhere-1")
