"""What the stack costs whatever runs (its alarms and custom metrics), as `estimate` says it."""

from __future__ import annotations

from decimal import Decimal

from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.telemetry import STACK_ALARMS, STACK_METRICS, stack_monthly
from imagebatch.models.money import ceil_micro


def stack_monthly_line(prices: RegionPrices, *, sagemaker: bool) -> str:
    kind = "sagemaker" if sagemaker else "bedrock"
    lines = stack_monthly(prices, sagemaker=sagemaker)
    total = ceil_micro(sum(lines.values(), start=Decimal(0)))
    return (
        f"the stack itself, batches or not: ${total / 1_000_000:,.2f} a month "
        f"({STACK_ALARMS[kind]} CloudWatch alarm(s), {STACK_METRICS[kind]} custom metrics "
        "while published; not charged to any batch)"
    )
