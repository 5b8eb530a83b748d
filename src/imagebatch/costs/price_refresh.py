"""`imagebatch prices refresh`: the AWS Price List's answers turned into the data files' prices.

Pure: the adapter (aws/price_list.py) fetches; this parses Price List documents and rewrites
the documents of data/aws_prices.json and data/bedrock_models.json, leaving every price the
Price List did not answer for as it was (the checked-in files keep working offline).

A GetProducts answer's PriceList is a list of JSON strings, each
`{"product": {"productFamily", "attributes": {...}, "sku"}, "terms": {"OnDemand": {<offer>:
{"priceDimensions": {<rate>: {"unit", "beginRange", "endRange", "pricePerUnit": {"USD"}}}}}}}`.

Which attributes select a price. Confirmed in public code that reads the Price List (2026):
Lambda `group` AWS-Lambda-Requests / AWS-Lambda-Duration / AWS-Lambda-Duration-ARM; S3
`group` S3-API-Tier1 (PUT/COPY/POST/LIST) and S3-API-Tier2 (GET), storage `volumeType`
Standard with usagetype *TimedStorage-ByteHrs; DynamoDB on-demand `group` DDB-WriteUnits /
DDB-ReadUnits with usagetype *WriteRequestUnits / *ReadRequestUnits; Step Functions
(service code AmazonStates) usagetype *StateTransition. Assumed, not confirmed: SNS
(AmazonSNS, usagetype *Requests-Tier1), SQS (AWSQueueService, usagetype *Requests-Tier1,
standard queue), EventBridge Scheduler (AWSEvents, usagetype *Scheduler-Invocation*),
CloudWatch (AmazonCloudWatch: logs ingestion *DataProcessing-Bytes, logs storage
*TimedStorage-ByteHrs, metrics *CW:MetricMonitorUsage, alarms *CW:AlarmMonitorUsage), X-Ray
(AWSXRay, *XRay-TracesStored),
SageMaker hosting (AmazonSageMaker, productFamily "ML Instance", `instanceName` and
`component` Hosting), and how Bedrock's image models are named: they are looked for under
AmazonBedrock and AmazonBedrockFoundationModels (third-party models sold through AWS
Marketplace) by the model's name in any attribute, and a price is taken only when exactly
one per-image price matches a model with one price tier. A query whose attributes are wrong
finds nothing and changes nothing; the report says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

# An address first, as every source in the data files (tests/unit/test_regions.py).
SOURCE = "https://pricing.us-east-1.amazonaws.com (AWS Price List API, pricing:GetProducts)"


class PriceDimension(BaseModel):
    model_config = ConfigDict(frozen=True)
    unit: str
    usd: Decimal
    begin_range: Decimal = Decimal(0)
    description: str = ""


class PriceListProduct(BaseModel):
    model_config = ConfigDict(frozen=True)
    sku: str
    product_family: str
    attributes: dict[str, str]
    dimensions: tuple[PriceDimension, ...]

    def rate(self) -> PriceDimension | None:
        """The on-demand rate after any free tier: the lowest tier with a price above zero
        (the data files price past the free tier)."""
        paid = [d for d in self.dimensions if d.usd > 0]
        return min(paid, key=lambda d: d.begin_range) if paid else None


def parse_product(document: str | Mapping[str, Any]) -> PriceListProduct:
    """One PriceList entry (a JSON string, as GetProducts returns it, or already parsed)."""
    plain: Mapping[str, Any] = json.loads(document) if isinstance(document, str) else document
    product = plain.get("product", {})
    dimensions = []
    for offer in plain.get("terms", {}).get("OnDemand", {}).values():
        for dimension in offer.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if usd is None:
                continue
            dimensions.append(
                PriceDimension(
                    unit=str(dimension.get("unit", "")),
                    usd=Decimal(usd),
                    begin_range=Decimal(dimension.get("beginRange") or 0),
                    description=str(dimension.get("description", "")),
                )
            )
    return PriceListProduct(
        sku=str(product.get("sku", "")),
        product_family=str(product.get("productFamily", "")),
        attributes={str(k): str(v) for k, v in product.get("attributes", {}).items()},
        dimensions=tuple(dimensions),
    )


class PriceQuery(BaseModel):
    """What GetProducts is asked (TERM_MATCH filters) and how its answers are narrowed."""

    model_config = ConfigDict(frozen=True)
    service_code: str
    filters: dict[str, str] = {}
    usagetype_pattern: str | None = None  # a regular expression the usagetype must match
    confirmed_attributes: bool = True  # False: the attribute names/values are assumed

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.filters.items()]
        if self.usagetype_pattern:
            parts.append(f"usagetype~{self.usagetype_pattern}")
        return f"{self.service_code} " + ", ".join(parts)

    def picks(self, product: PriceListProduct) -> bool:
        if any(product.attributes.get(k) != v for k, v in self.filters.items()):
            return False
        pattern = self.usagetype_pattern
        return pattern is None or bool(re.search(pattern, product.attributes.get("usagetype", "")))


# The price names data/aws_prices.json holds, each with the query that answers it.
SERVICE_QUERIES: dict[str, PriceQuery] = {
    "stepfunctions_standard_transition": PriceQuery(
        service_code="AmazonStates", usagetype_pattern=r"(^|-)StateTransition$"
    ),
    "lambda_request": PriceQuery(
        service_code="AWSLambda", filters={"group": "AWS-Lambda-Requests"}
    ),
    "lambda_arm64_gb_second": PriceQuery(
        service_code="AWSLambda", filters={"group": "AWS-Lambda-Duration-ARM"}
    ),
    "lambda_x86_gb_second": PriceQuery(
        service_code="AWSLambda", filters={"group": "AWS-Lambda-Duration"}
    ),
    "s3_put_request": PriceQuery(service_code="AmazonS3", filters={"group": "S3-API-Tier1"}),
    "s3_get_request": PriceQuery(service_code="AmazonS3", filters={"group": "S3-API-Tier2"}),
    "s3_standard_gb_month": PriceQuery(
        service_code="AmazonS3",
        filters={"volumeType": "Standard"},
        usagetype_pattern=r"(^|-)TimedStorage-ByteHrs$",
    ),
    "dynamodb_write_request_unit": PriceQuery(
        service_code="AmazonDynamoDB",
        filters={"group": "DDB-WriteUnits"},
        usagetype_pattern=r"(^|-)WriteRequestUnits$",
    ),
    "dynamodb_read_request_unit": PriceQuery(
        service_code="AmazonDynamoDB",
        filters={"group": "DDB-ReadUnits"},
        usagetype_pattern=r"(^|-)ReadRequestUnits$",
    ),
    "sns_publish": PriceQuery(
        service_code="AmazonSNS",
        usagetype_pattern=r"(^|-)Requests-Tier1$",
        confirmed_attributes=False,
    ),
    "sqs_request": PriceQuery(
        service_code="AWSQueueService",
        filters={"queueType": "Standard"},
        usagetype_pattern=r"(^|-)Requests-Tier1$",
        confirmed_attributes=False,
    ),
    "eventbridge_scheduler_invocation": PriceQuery(
        service_code="AWSEvents",
        usagetype_pattern=r"Scheduler-Invocation",
        confirmed_attributes=False,
    ),
    "cloudwatch_logs_ingest_gb": PriceQuery(
        service_code="AmazonCloudWatch",
        usagetype_pattern=r"(^|-)DataProcessing-Bytes$",
        confirmed_attributes=False,
    ),
    "cloudwatch_logs_storage_gb_month": PriceQuery(
        service_code="AmazonCloudWatch",
        usagetype_pattern=r"(^|-)TimedStorage-ByteHrs$",
        confirmed_attributes=False,
    ),
    "cloudwatch_custom_metric_month": PriceQuery(
        service_code="AmazonCloudWatch",
        usagetype_pattern=r"(^|-)CW:MetricMonitorUsage$",
        confirmed_attributes=False,
    ),
    "cloudwatch_alarm_month": PriceQuery(
        service_code="AmazonCloudWatch",
        usagetype_pattern=r"(^|-)CW:AlarmMonitorUsage$",
        confirmed_attributes=False,
    ),
    "xray_trace_recorded": PriceQuery(
        service_code="AWSXRay",
        usagetype_pattern=r"(^|-)XRay-TracesStored$",
        confirmed_attributes=False,
    ),
}
BEDROCK_SERVICE_CODES = ("AmazonBedrock", "AmazonBedrockFoundationModels")


def instance_query(instance_type: str) -> PriceQuery:
    return PriceQuery(
        service_code="AmazonSageMaker",
        filters={"instanceName": instance_type, "component": "Hosting"},
        confirmed_attributes=False,
    )


def pick_rate(products: Iterable[PriceListProduct], query: PriceQuery) -> Decimal | None:
    """The one rate the query selects; None when it selects none, or several that differ
    (then the attributes are not specific enough to trust)."""
    rates = {rate.usd for p in products if query.picks(p) and (rate := p.rate()) is not None}
    return rates.pop() if len(rates) == 1 else None


def _mark(entry: dict[str, Any], usd: Decimal, key: str, query: str, today: date) -> str:
    """Writes a confirmed price into a data-file entry; returns a line for the report."""
    old = Decimal(str(entry[key]))
    entry[key] = format(usd.normalize(), "f")
    entry["source"] = f"{SOURCE}: {query}"
    entry["retrieved"] = today.isoformat()
    entry["confirmed"] = True
    entry["confirmed_by"] = f"pricing:GetProducts {today.isoformat()}"
    return "unchanged" if old == usd else f"{old} -> {usd}"


class RefreshLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    region: str
    name: str
    outcome: str  # "unchanged", "old -> new", or why nothing was taken


def refresh_aws_prices(
    document: dict[str, Any],
    region: str,
    answers: Mapping[str, Sequence[PriceListProduct]],
    today: date,
) -> list[RefreshLine]:
    """Updates `document` (aws_prices.json, parsed) in place for `region` from the products
    each query answered (keyed by price name or instance type); returns what happened."""
    lines: list[RefreshLine] = []
    prices = document["regions"].get(region)
    if prices is None:
        return [RefreshLine(region=region, name="-", outcome="no prices held for this region")]
    for entry in prices["services"]:
        query = SERVICE_QUERIES.get(entry["name"])
        lines.append(_refresh_one(entry, "usd", entry["name"], query, answers, region, today))
    for entry in prices["sagemaker_instances"]:
        name = entry["instance_type"]
        query = instance_query(name)
        lines.append(_refresh_one(entry, "usd_per_hour", name, query, answers, region, today))
    return lines


def _refresh_one(  # noqa: PLR0917 - one entry's inputs, all needed
    entry: dict[str, Any],
    key: str,
    name: str,
    query: PriceQuery | None,
    answers: Mapping[str, Sequence[PriceListProduct]],
    region: str,
    today: date,
) -> RefreshLine:
    if query is None:
        return RefreshLine(region=region, name=name, outcome="no Price List query known; kept")
    usd = pick_rate(answers.get(name, ()), query)
    if usd is None:
        why = "attributes assumed, " if not query.confirmed_attributes else ""
        return RefreshLine(
            region=region,
            name=name,
            outcome=f"no single rate for {query.describe()} ({why}kept as it was)",
        )
    return RefreshLine(
        region=region, name=name, outcome=_mark(entry, usd, key, query.describe(), today)
    )


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def bedrock_image_rate(products: Iterable[PriceListProduct], model_name: str) -> Decimal | None:
    """The per-image price of a model named `model_name`, when exactly one paid rate's
    product names it in an attribute and its unit counts images."""
    wanted = _squash(model_name)
    rates = set()
    for product in products:
        if not any(wanted in _squash(v) for v in product.attributes.values()):
            continue
        rate = product.rate()
        if rate is not None and "image" in rate.unit.lower():
            rates.add(rate.usd)
    return rates.pop() if len(rates) == 1 else None


def refresh_bedrock_models(
    document: dict[str, Any],
    region: str,
    products: Sequence[PriceListProduct],
    lifecycles: Mapping[str, str],
    today: date,
) -> list[RefreshLine]:
    """Updates bedrock_models.json (parsed) in place: each model's lifecycle status as
    ListFoundationModels reports it in `region`, and a single-tier model's price where the
    Price List names it unambiguously; returns what happened."""
    lines: list[RefreshLine] = []
    for model in document["models"]:
        model_id = model["model_id"]
        status = lifecycles.get(model_id)
        if status is None:
            outcome = f"not listed by bedrock:ListFoundationModels in {region}; lifecycle kept"
        else:
            old = model["lifecycle"]["status"]
            model["lifecycle"]["status"] = status.lower()
            model["lifecycle"]["confirmed_by"] = f"bedrock:ListFoundationModels {today}"
            outcome = "lifecycle unchanged" if old == status.lower() else f"{old} -> {status}"
        lines.append(RefreshLine(region=region, name=f"{model_id} lifecycle", outcome=outcome))
        if len(model["prices"]) != 1:
            lines.append(
                RefreshLine(
                    region=region,
                    name=f"{model_id} price",
                    outcome="several tiers: the Price List's tier names are not known; kept",
                )
            )
            continue
        usd = bedrock_image_rate(products, model["name"])
        if usd is None:
            outcome = "no single per-image rate names this model (attributes assumed); kept"
        else:
            where = f"{'/'.join(BEDROCK_SERVICE_CODES)} regionCode={region}, {model['name']}"
            outcome = _mark(model["prices"][0], usd, "usd_per_image", where, today)
        lines.append(RefreshLine(region=region, name=f"{model_id} price", outcome=outcome))
    return lines


def dump_aws_prices(document: Mapping[str, Any]) -> str:
    """aws_prices.json as it is checked in: one line a price, so a refresh's diff shows
    exactly the prices that changed."""
    lines = ["{", f'  "about": {json.dumps(document["about"], ensure_ascii=False)},']
    lines.append('  "regions": {')
    regions = list(document["regions"].items())
    for index, (region, prices) in enumerate(regions):
        lines.append(f"    {json.dumps(region)}: {{")
        keys = [key for key in ("services", "sagemaker_instances") if key in prices]
        for position, key in enumerate(keys):
            comma = "," if position < len(keys) - 1 else ""
            entries = prices[key]
            if not entries:
                lines.append(f'      "{key}": []{comma}')
                continue
            lines.append(f'      "{key}": [')
            lines.extend(
                f"        {json.dumps(entry, ensure_ascii=False)}"
                + ("," if n < len(entries) - 1 else "")
                for n, entry in enumerate(entries)
            )
            lines.append(f"      ]{comma}")
        lines.append("    }" + ("," if index < len(regions) - 1 else ""))
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def dump_bedrock_models(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
