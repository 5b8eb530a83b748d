"""The AWS Price List API (pricing:GetProducts) and Bedrock's model list
(bedrock:ListFoundationModels), for `imagebatch prices refresh`. Clients are injected: the
CLI's session makes the pricing client on us-east-1 (the API's endpoint; it answers for every
region) and the Bedrock client in the region whose models are listed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from imagebatch.costs.price_refresh import PriceListProduct, PriceQuery, parse_product

if TYPE_CHECKING:
    from mypy_boto3_bedrock import BedrockClient


class PricingClient(Protocol):
    """The one call used, as boto3's `pricing` client answers it (no boto3-stubs for it)."""

    def get_products(self, **kwargs: Any) -> Mapping[str, Any]: ...


class PriceList:
    def __init__(self, client: PricingClient) -> None:
        self._pricing = client

    def products(
        self, service_code: str, region: str, filters: Mapping[str, str] | None = None
    ) -> list[PriceListProduct]:
        """Every product of `service_code` in `region` matching the TERM_MATCH filters."""
        terms = {"regionCode": region, **(filters or {})}
        request: dict[str, Any] = {
            "ServiceCode": service_code,
            "FormatVersion": "aws_v1",
            "Filters": [
                {"Type": "TERM_MATCH", "Field": field, "Value": value}
                for field, value in terms.items()
            ],
            "MaxResults": 100,
        }
        found: list[PriceListProduct] = []
        while True:
            response = self._pricing.get_products(**request)
            found.extend(parse_product(entry) for entry in response.get("PriceList", []))
            token = response.get("NextToken")
            if not token:
                return found
            request["NextToken"] = token

    def answer(self, query: PriceQuery, region: str) -> list[PriceListProduct]:
        """The products a data-file query asks for (its filters; the usagetype pattern and
        the rate are applied by costs.price_refresh)."""
        return self.products(query.service_code, region, query.filters)


def model_lifecycles(client: BedrockClient) -> dict[str, str]:
    """modelId -> modelLifecycle.status (ACTIVE | LEGACY) for every model the client's region
    lists."""
    response = client.list_foundation_models()
    return {
        model["modelId"]: model.get("modelLifecycle", {}).get("status", "ACTIVE")
        for model in response.get("modelSummaries", [])
    }
