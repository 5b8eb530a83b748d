"""Price List entries as GetProducts returns them (JSON strings), for the tests of
`imagebatch prices refresh`."""

from __future__ import annotations

import json

ARN_PREFIX = "arn:aws:bedrock:us-west-2::foundation-model/"


def price_list_entry(
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


LAMBDA_ARM = price_list_entry(
    {
        "servicecode": "AWSLambda",
        "regionCode": "us-east-1",
        "group": "AWS-Lambda-Duration-ARM",
        "usagetype": "USE1-Lambda-GB-Second-ARM",
    },
    [("0.0000133334", "Lambda-GB-Second", "0"), ("0.0000120001", "Lambda-GB-Second", "7.5E9")],
)
