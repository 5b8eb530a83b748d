"""Cost Explorer: what AWS billed a stack, per day and service (ce:GetCostAndUsage).

Cost Explorer filters by a cost-allocation tag: `aws:cloudformation:stack-name` (AWS-generated,
on every resource CloudFormation creates that can carry tags) or a tag of the stack's own;
either must be activated in the Billing console before Cost Explorer reports it, and only
spend from then on carries it. Each request costs $0.01 (AWS's Cost Explorer pricing page), so
one reconciliation is one request plus one per page. The client is the CLI user's (the CLI
runs as the person, not a stack role): it needs `ce:GetCostAndUsage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, Protocol

from imagebatch.costs.reconcile import ServiceDayCost, usd_to_micro

METRIC = "UnblendedCost"


class CostExplorerClient(Protocol):
    """The one call used, as boto3's `ce` client answers it (no boto3-stubs for ce here)."""

    def get_cost_and_usage(self, **kwargs: Any) -> Mapping[str, Any]: ...


class CostExplorer:
    def __init__(self, client: CostExplorerClient) -> None:
        self._ce = client

    def daily_costs_by_service(
        self, since: date, until: date, tag_key: str, tag_value: str
    ) -> list[ServiceDayCost]:
        """Unblended cost per day and SERVICE from `since` to `until` inclusive (Cost
        Explorer's End is exclusive), for resources tagged tag_key=tag_value."""
        request: dict[str, Any] = {
            "TimePeriod": {
                "Start": since.isoformat(),
                "End": (until + timedelta(days=1)).isoformat(),
            },
            "Granularity": "DAILY",
            "Metrics": [METRIC],
            "GroupBy": [{"Type": "DIMENSION", "Key": "SERVICE"}],
            "Filter": {"Tags": {"Key": tag_key, "Values": [tag_value], "MatchOptions": ["EQUALS"]}},
        }
        costs: list[ServiceDayCost] = []
        while True:
            response = self._ce.get_cost_and_usage(**request)
            for period in response.get("ResultsByTime", []):
                costs.extend(_period_costs(period))
            token = response.get("NextPageToken")
            if not token:
                return costs
            request["NextPageToken"] = token


def _period_costs(period: Mapping[str, Any]) -> list[ServiceDayCost]:
    day = date.fromisoformat(period["TimePeriod"]["Start"])
    estimated = bool(period.get("Estimated", False))
    found = []
    for group in period.get("Groups", []):
        amount = group.get("Metrics", {}).get(METRIC, {})
        if amount.get("Unit", "USD") != "USD":
            raise ValueError(f"Cost Explorer answered in {amount.get('Unit')}, not USD")
        found.append(
            ServiceDayCost(
                day=day,
                service=group["Keys"][0],
                micro_usd=usd_to_micro(amount.get("Amount", "0")),
                estimated=estimated,
            )
        )
    return found
