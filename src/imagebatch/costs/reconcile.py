"""The ledger beside Cost Explorer, per day and service, each difference given its reason.

The ledger's day rollups (DAY#<day>, summed per backend by the query API's /costs) know three
amounts a day: Bedrock inference, SageMaker instance time (inference, cold starts, idle, and
the endpoint's unattributed idle), and the orchestration and storage the batches were
charged (spent - inference: Lambda with its INIT phase, Step Functions, DynamoDB, S3, SQS,
SNS, EventBridge Scheduler, CloudWatch Logs and X-Ray traces, priced from the counters, not
split per service in the rollup). Cost Explorer knows what AWS billed, per SERVICE. So the
comparison has three rows a day that pair up and one row per service the ledger does not
price at all.

The stack's CloudWatch alarms and custom metrics are billed monthly to the stack, batches or
not (costs.telemetry.stack_monthly): a category the per-batch ledger does not carry. Cost
Explorer bills them under AmazonCloudWatch, in the orchestration row beside the batches' logs,
so that row can be above the ledger by the stack's daily share of them (the month / 30).

Why the two can differ, each tested for in this order (the first that fits is given):
  - lag: Cost Explorer updates about once a day, so the last day or two (and any figure it
    marks Estimated) are incomplete;
  - rounding: the ledger counts integer micro-dollars; Cost Explorer's amounts and the bill
    are rounded (the bill to the cent), so a difference under a cent a line is rounding;
  - not priced: a service the ledger never charges (ECR, API Gateway, KMS, tax...) is all
    difference;
  - per stack: the orchestration row above the ledger by no more than the stack's daily share
    of its alarms and custom metrics (and a cent of rounding);
  - free tier: the ledger prices every request at the on-demand rate after the free tier
    (data/aws_prices.json), so orchestration the free tier covered is billed lower;
  - otherwise: unexplained, shown as such (another stack's resources under the same tag, a
    price that changed, spend outside batches).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

from imagebatch.costs.overhead import UNATTRIBUTED
from imagebatch.models.money import MICRO, round_micro

# Cost Explorer's SERVICE dimension values. "Amazon Bedrock", "AWS Lambda", "Amazon DynamoDB",
# "Amazon Simple Storage Service", "AWS Step Functions" and "Amazon SageMaker" are the names
# AWS's examples and Cost Explorer show; the rest are assumed from the same naming (no AWS
# account here to list them with GetDimensionValues). Third-party models on Bedrock are sold
# through AWS Marketplace and may be billed under a service of their own named
# "<model> (Amazon Bedrock Edition)"; any service with that suffix counts as Bedrock.
# "AmazonCloudWatch" and "AWS X-Ray" are the names public AWS Budgets configurations filter
# costs on (not checked against an account).
BEDROCK_SERVICES = frozenset({"Amazon Bedrock"})
BEDROCK_EDITION_SUFFIX = "(Amazon Bedrock Edition)"
SAGEMAKER_SERVICES = frozenset({"Amazon SageMaker"})
ORCHESTRATION_SERVICES = frozenset(
    {
        "AWS Lambda",
        "AWS Step Functions",
        "Amazon DynamoDB",
        "Amazon Simple Storage Service",
        "Amazon Simple Queue Service",
        "Amazon Simple Notification Service",
        "Amazon EventBridge",
        # logs and traces are charged to batches per invocation (costs.telemetry); the
        # stack's alarms and custom metrics are billed here too, per stack (see above)
        "AmazonCloudWatch",
        "AWS X-Ray",
    }
)
# The row each ledger amount is compared on.
BEDROCK_ROW = "Amazon Bedrock"
SAGEMAKER_ROW = "Amazon SageMaker"
ORCHESTRATION_ROW = (
    "orchestration and storage (Lambda, Step Functions, DynamoDB, S3, SQS, SNS, CloudWatch, X-Ray)"
)
ROUNDING_MICRO_USD = 10_000  # a cent: what the bill rounds each line to
LAG_DAYS = 2  # today and yesterday may be incomplete in Cost Explorer

_DAYS_PER_MONTH = 30  # the stack's monthly items, spread over a day
Reason = Literal["match", "lag", "rounding", "not_priced", "per_stack", "free_tier", "unexplained"]


class ServiceDayCost(BaseModel):
    """One Cost Explorer figure: a service's unblended cost on one day."""

    model_config = ConfigDict(frozen=True)
    day: date
    service: str
    micro_usd: int
    estimated: bool = False


class LedgerDay(BaseModel):
    """What the ledger charged on one day, in the three amounts its rollups know."""

    model_config = ConfigDict(frozen=True)
    day: date
    bedrock_micro_usd: int = 0
    sagemaker_micro_usd: int = 0
    orchestration_micro_usd: int = 0


class ReconcileLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    day: date
    row: str
    ledger_micro_usd: int | None  # None: the ledger does not price this service
    cost_explorer_micro_usd: int
    difference_micro_usd: int  # Cost Explorer - ledger
    reason: Reason
    explanation: str


class Reconciliation(BaseModel):
    model_config = ConfigDict(frozen=True)
    since: date
    until: date
    tag: str
    lines: tuple[ReconcileLine, ...]
    # the stack's alarms and custom metrics a month (micro-dollars): not in the ledger
    stack_monthly_micro_usd: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ledger_micro_usd(self) -> int:
        return sum(line.ledger_micro_usd or 0 for line in self.lines)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_explorer_micro_usd(self) -> int:
        return sum(line.cost_explorer_micro_usd for line in self.lines)


def usd_to_micro(amount: str | Decimal) -> int:
    """Cost Explorer's decimal string as micro-dollars, rounded once."""
    return round_micro(Decimal(amount) * MICRO)


def row_of(service: str) -> str | None:
    """The ledger row a Cost Explorer service is compared on; None: not priced by the ledger."""
    if service in BEDROCK_SERVICES or service.endswith(BEDROCK_EDITION_SUFFIX):
        return BEDROCK_ROW
    if service in SAGEMAKER_SERVICES:
        return SAGEMAKER_ROW
    if service in ORCHESTRATION_SERVICES:
        return ORCHESTRATION_ROW
    return None


def ledger_day(day: date, groups: Iterable[Mapping[str, object]]) -> LedgerDay:
    """A day from the query API's /costs?group_by=backend groups (key, inference, spent):
    each backend's inference is its service's; every batch's spent - inference is
    orchestration; the endpoint's unattributed idle is SageMaker's."""
    bedrock = sagemaker = orchestration = 0
    for group in groups:
        key = str(group.get("key"))
        inference = _int(group.get("inference_micro_usd"))
        spent = _int(group.get("spent_micro_usd"))
        if key == UNATTRIBUTED:
            sagemaker += spent
            continue
        if key == "sagemaker":
            sagemaker += inference
        else:
            bedrock += inference
        orchestration += spent - inference
    return LedgerDay(
        day=day,
        bedrock_micro_usd=bedrock,
        sagemaker_micro_usd=sagemaker,
        orchestration_micro_usd=orchestration,
    )


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | str | Decimal) else 0


def _usd(micro: int) -> str:
    sign = "-" if micro < 0 else ""
    return f"{sign}${abs(micro) / 1_000_000:,.6f}"


def _explain(  # noqa: PLR0911 - one return per reason, in the module's order
    day: date,
    row: str,
    ledger: int | None,
    billed: int,
    *,
    estimated: bool,
    today: date,
    services: Sequence[str],
    stack_daily: int = 0,
) -> tuple[Reason, str]:
    difference = billed - (ledger or 0)
    if ledger is None:
        return "not_priced", (
            f"{', '.join(services)}: not priced by the ledger (no batch is charged for it); "
            f"all {_usd(billed)} is difference"
        )
    if difference == 0:
        return "match", "the same to the micro-dollar"
    recent = (today - day).days < LAG_DAYS
    if (recent or estimated) and difference < 0:
        why = "marked Estimated by Cost Explorer" if estimated else "within a day of today"
        return "lag", (
            f"{why}: Cost Explorer updates about once a day, so {_usd(-difference)} of the "
            "ledger's charge may not be billed yet; run again in a day or two"
        )
    if abs(difference) < ROUNDING_MICRO_USD:
        return "rounding", (
            f"{_usd(difference)}: under a cent; the ledger counts integer micro-dollars, "
            "Cost Explorer and the bill round (the bill to the cent)"
        )
    if row == ORCHESTRATION_ROW and 0 < difference <= stack_daily + ROUNDING_MICRO_USD:
        return "per_stack", (
            f"billed {_usd(difference)} more: the stack's CloudWatch alarms and custom metrics "
            f"(about {_usd(stack_daily)} a day) are billed to the stack, a category the "
            "per-batch ledger does not carry (`imagebatch estimate` prints them a month)"
        )
    if row == ORCHESTRATION_ROW and difference < 0:
        return "free_tier", (
            f"billed {_usd(-difference)} less: the ledger prices every request at the "
            "on-demand rate after the free tier; requests the free tier (or credits) covered "
            "are billed lower"
        )
    if recent or estimated:
        return "lag", "Cost Explorer's figure for this day is not final yet (about a day's lag)"
    return "unexplained", (
        f"{_usd(difference)} not explained: another resource with the same tag, spend "
        "outside batches, or a price in data/aws_prices.json that is out of date "
        "(`imagebatch prices refresh`)"
    )


def _day_rows(mine: LedgerDay, amounts: Mapping[tuple[date, str], int]) -> dict[str, int | None]:
    """The day's rows in order, each with the ledger's amount (None: not priced): the three
    the ledger prices when either side has them, then Cost Explorer's other services."""
    priced = {
        BEDROCK_ROW: mine.bedrock_micro_usd,
        SAGEMAKER_ROW: mine.sagemaker_micro_usd,
        ORCHESTRATION_ROW: mine.orchestration_micro_usd,
    }
    rows: dict[str, int | None] = {
        r: amount for r, amount in priced.items() if amount or (mine.day, r) in amounts
    }
    rows.update({r: None for d, r in sorted(amounts) if d == mine.day and r not in priced})
    return rows


def reconcile(
    ledger: Iterable[LedgerDay],
    billed: Iterable[ServiceDayCost],
    *,
    since: date,
    until: date,
    today: date,
    tag: str,
    stack_monthly_micro_usd: int = 0,
) -> Reconciliation:
    """Every day from since to until (inclusive), each row the ledger or Cost Explorer has;
    `stack_monthly_micro_usd`: the stack's alarms and custom metrics a month, which explain
    that much of the orchestration row above the ledger."""
    stack_daily = math.ceil(stack_monthly_micro_usd / _DAYS_PER_MONTH)
    by_day = {d.day: d for d in ledger}
    amounts: dict[tuple[date, str], int] = {}
    estimated: set[tuple[date, str]] = set()
    services: dict[tuple[date, str], list[str]] = {}
    for cost in billed:
        row = row_of(cost.service) or cost.service
        key = (cost.day, row)
        amounts[key] = amounts.get(key, 0) + cost.micro_usd
        services.setdefault(key, []).append(cost.service)
        if cost.estimated:
            estimated.add(key)
    lines: list[ReconcileLine] = []
    day = since
    while day <= until:
        for row, charged in _day_rows(by_day.get(day, LedgerDay(day=day)), amounts).items():
            key = (day, row)
            from_ce = amounts.get(key, 0)
            reason, text = _explain(
                day,
                row,
                charged,
                from_ce,
                estimated=key in estimated,
                today=today,
                services=services.get(key, [row]),
                stack_daily=stack_daily,
            )
            lines.append(
                ReconcileLine(
                    day=day,
                    row=row,
                    ledger_micro_usd=charged,
                    cost_explorer_micro_usd=from_ce,
                    difference_micro_usd=from_ce - (charged or 0),
                    reason=reason,
                    explanation=text,
                )
            )
        day += timedelta(days=1)
    return Reconciliation(
        since=since,
        until=until,
        tag=tag,
        lines=tuple(lines),
        stack_monthly_micro_usd=stack_monthly_micro_usd,
    )
