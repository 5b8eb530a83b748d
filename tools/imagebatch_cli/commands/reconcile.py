"""`imagebatch costs --reconcile`: the ledger's day rollups beside what Cost Explorer billed.

The ledger side comes from the query API's /costs, one request a day grouped by backend (the
deployed stack's API, --api, or the exports of `local run`); Cost Explorer's from
ce:GetCostAndUsage with the CLI user's own credentials, filtered by a cost-allocation tag
(default `aws:cloudformation:stack-name` = the stack's name). The comparison and each
difference's reason are imagebatch.costs.reconcile's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from imagebatch_cli.exit_codes import fail
from imagebatch_cli.query_client import parse_time

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from imagebatch.costs.reconcile import Reconciliation

STACK_TAG = "aws:cloudformation:stack-name"
MAX_DAYS = 92  # one ledger request a day; a quarter is plenty for a reconciliation


def cost_tag(stack: str | None, value: str | None) -> tuple[str, str]:
    """--cost-tag KEY=VALUE, else the stack's CloudFormation tag from --stack or
    samconfig.toml's stack_name."""
    from imagebatch_cli.deployed_stack import read_samconfig

    if value:
        key, sep, tag_value = value.rpartition("=")
        if not sep or not key or not tag_value:
            raise typer.BadParameter(
                f"{value!r} is not KEY=VALUE (for example {STACK_TAG}=imagebatch)",
                param_hint="--cost-tag",
            )
        return key, tag_value
    name = stack or read_samconfig().stack_name
    if not name:
        fail("name the stack Cost Explorer should filter on: --stack NAME or --cost-tag KEY=VALUE")
    return STACK_TAG, name


def day_range(since: str, until: str | None) -> tuple[date, date]:
    start = parse_time(since, "--since").date()
    end = parse_time(until, "--until").date() if until else datetime.now(UTC).date()
    if end < start:
        raise typer.BadParameter(
            f"--since {since} is after --until {until}: the range is empty", param_hint="--since"
        )
    if (end - start).days >= MAX_DAYS:
        raise typer.BadParameter(
            f"--since to --until spans more than {MAX_DAYS} days; reconcile a shorter range",
            param_hint="--since",
        )
    return start, end


def reconcile_costs(
    get_many: Callable[[list[tuple[str, Mapping[str, str] | None]]], list[Any]],
    days: tuple[date, date],
    tag: tuple[str, str],
) -> Reconciliation:
    """`get_many` makes GETs on the query API (the command's, bound to where it reads): one
    /costs a day, grouped by backend."""
    from imagebatch.aws.cost_explorer import CostExplorer
    from imagebatch.aws.session import aws_errors
    from imagebatch.costs.reconcile import SAGEMAKER_SERVICES, ledger_day, reconcile
    from imagebatch_cli.deployed_stack import read_samconfig
    from imagebatch_cli.settings import aws_session

    since, until = days
    days_asked = [since + timedelta(days=n) for n in range((until - since).days + 1)]
    reports = get_many(
        [
            (
                "/costs",
                {"group_by": "backend", "since": f"{day}T00:00:00Z", "until": f"{day}T23:59:59Z"},
            )
            for day in days_asked
        ]
    )
    ledger = [
        ledger_day(day, report.get("groups", []))
        for day, report in zip(days_asked, reports, strict=True)
    ]
    session = aws_session(default_region=read_samconfig().region)
    with aws_errors("Cost Explorer GetCostAndUsage"):
        billed = CostExplorer(session.cost_explorer()).daily_costs_by_service(
            since, until, tag[0], tag[1]
        )
    return reconcile(
        ledger,
        billed,
        since=since,
        until=until,
        today=datetime.now(UTC).date(),
        tag=f"{tag[0]}={tag[1]}",
        stack_monthly_micro_usd=stack_monthly_micro_usd(
            session.region,
            # the endpoint's alarms exist once it is deployed: taken as deployed when it
            # billed or served anything in the range
            sagemaker=any(d.sagemaker_micro_usd for d in ledger)
            or any(b.service in SAGEMAKER_SERVICES for b in billed),
        ),
    )


def stack_monthly_micro_usd(region: str, *, sagemaker: bool) -> int:
    """The stack's alarms and custom metrics a month (costs.telemetry), as `estimate` says."""
    from decimal import Decimal

    from imagebatch.costs.prices import load_aws_prices
    from imagebatch.costs.telemetry import stack_monthly
    from imagebatch.models.money import ceil_micro

    prices = load_aws_prices()
    if region not in prices.regions:
        return 0
    lines = stack_monthly(prices.region(region), sagemaker=sagemaker)
    return ceil_micro(sum(lines.values(), start=Decimal(0)))


def print_reconciliation(result: Reconciliation, *, as_json: bool) -> None:
    from imagebatch_cli.views.console import console, emit_json
    from imagebatch_cli.views.reconcile import reconcile_table, reconcile_totals

    if as_json:
        emit_json(result)
        return
    console.print(reconcile_table(result))
    for line in reconcile_totals(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
