"""`costs --reconcile` and `prices refresh` as a person reads them."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

from imagebatch.costs.price_refresh import RefreshLine
from imagebatch.costs.reconcile import Reconciliation


def _usd(micro: int | None) -> str:
    if micro is None:
        return "not priced"
    sign = "-" if micro < 0 else ""
    return f"{sign}${abs(micro) / 1_000_000:,.6f}"


def reconcile_table(result: Reconciliation) -> Table:
    """One line per day and service: the ledger, Cost Explorer, the difference and why."""
    table = Table(
        title=f"ledger vs Cost Explorer, {result.since} to {result.until} ({result.tag})",
        show_header=True,
        header_style="bold",
    )
    table.add_column("day", no_wrap=True)
    table.add_column("service", no_wrap=True)
    table.add_column("ledger", justify="right", no_wrap=True)
    table.add_column("Cost Explorer", justify="right", no_wrap=True)
    table.add_column("difference", justify="right", no_wrap=True)
    table.add_column("why")
    for line in result.lines:
        table.add_row(
            line.day.isoformat(),
            line.row,
            _usd(line.ledger_micro_usd),
            _usd(line.cost_explorer_micro_usd),
            _usd(line.difference_micro_usd),
            f"{line.reason}: {line.explanation}",
        )
    return table


def reconcile_totals(result: Reconciliation) -> list[str]:
    lines = [
        f"ledger {_usd(result.ledger_micro_usd)}, Cost Explorer "
        f"{_usd(result.cost_explorer_micro_usd)}, difference "
        f"{_usd(result.cost_explorer_micro_usd - result.ledger_micro_usd)}"
    ]
    if result.stack_monthly_micro_usd:
        lines.append(
            f"not in the ledger: the stack's CloudWatch alarms and custom metrics, about "
            f"{_usd(result.stack_monthly_micro_usd)} a month, are billed to the stack, not to "
            "a batch (a category the per-batch ledger does not carry; in Cost Explorer's "
            "orchestration row, reason per_stack)"
        )
    if not result.lines:
        lines.append(
            "nothing in either: no batch ran and Cost Explorer reports nothing under the tag "
            "(is it activated as a cost-allocation tag in the Billing console?)"
        )
    return lines


def refresh_table(lines: Iterable[RefreshLine], title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("region", no_wrap=True)
    table.add_column("price", no_wrap=True)
    table.add_column("outcome")
    for line in lines:
        table.add_row(line.region, line.name, line.outcome)
    return table
