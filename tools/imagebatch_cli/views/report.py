"""Tables a person reads: a batch's cost summary and its failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from imagebatch.costs import terms
from imagebatch.models.money import format_usd as usd

if TYPE_CHECKING:
    # the query API's models load Powertools' OpenAPI types: only when a table is printed
    from imagebatch.api.responses import BatchListEntry, BatchSummary
    from imagebatch.models.batch_record import BatchRecord


def cost_table(summary: BatchRecord, images: Iterable[dict[str, Any]] = ()) -> Table:
    """The batch: status, images, estimate and budget; per-model lines from the image records.
    Money by category is categories_table's (one vocabulary: imagebatch.costs.terms)."""
    table = Table(title=f"batch {summary.batch_id}", show_header=True, header_style="bold")
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    rows: list[tuple[str, str]] = [
        ("status", str(summary.status)),
        ("backend", str(summary.backend if summary.backend is not None else "-")),
        ("images requested", str(summary.images_total)),
        ("images made", str(summary.images_succeeded)),
    ]
    # only a batch that reused images shows the lines, so other batches read as before
    if summary.images_reused:
        rows.append((terms.REUSED, str(summary.images_reused)))
        rows.append((terms.REUSE_SAVED, usd(summary.reuse_saved_micro_usd)))
    rows += [
        ("images failed", str(summary.images_failed)),
        ("invalid manifest lines", str(summary.invalid_lines or 0)),
        (terms.ESTIMATE, usd(summary.estimate_total_micro_usd or 0)),
    ]
    if summary.max_cost_micro_usd:
        rows.append((terms.BUDGET, usd(summary.max_cost_micro_usd)))
    by_model: Counter[str] = Counter()
    cost_by_model: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for record in images:
        if record.get("status") == "SUCCEEDED":
            by_model[record["model"]] += 1
            cost_by_model[record["model"]] += int(record.get("cost_micro_usd", 0))
        elif record.get("failure_class"):
            failures[record["failure_class"]] += 1
    for model, count in sorted(by_model.items()):
        rows.append((f"  {model}", f"{count} images, inference {usd(cost_by_model[model])}"))
    for failure_class, count in sorted(failures.items()):
        rows.append((f"  failed: {failure_class}", str(count)))
    if summary.rejection:
        rows.append(("rejected because", summary.rejection))
    for row in rows:
        table.add_row(*row)
    return table


def categories_table(shown: BatchSummary) -> Table:
    """Cost by category, their total and what the budget was charged, per image and per
    1,000 images (the API's batch summary)."""
    table = Table(title=f"cost of {shown.batch_id}", header_style="bold")
    for column in ("", "batch", "per image made", "per 1,000 images"):
        table.add_column(column, justify="left" if not column else "right", no_wrap=True)
    costs = shown.costs.model_dump()
    per_image = shown.cost_per_image.model_dump() if shown.cost_per_image else {}
    per_1000 = shown.cost_per_1000.model_dump() if shown.cost_per_1000 else {}
    for category, label in terms.CATEGORY_LABELS.items():
        table.add_row(
            label,
            usd(costs[category]),
            usd(per_image[category]) if category in per_image else "-",
            usd(per_1000[category]) if category in per_1000 else "-",
        )
        if category == "orchestration" and shown.telemetry is not None:
            for line, amount in shown.telemetry.model_dump().items():
                table.add_row(terms.TELEMETRY_LABELS[line], usd(amount), "", "")
    endpoint = shown.endpoint_overhead_micro_usd
    if endpoint:
        table.add_row("endpoint cold start + idle", usd(endpoint), "-", "-")
    table.add_row(terms.CHARGED, usd(shown.charged_micro_usd), "", "")
    budget = shown.max_cost_micro_usd
    if budget:
        table.add_row(terms.BUDGET, usd(budget), "", "")
    return table


def batches_table(batches: list[BatchListEntry]) -> Table:
    table = Table(title="batches, newest first", header_style="bold")
    for column in ("batch", "status", "created", "made", "failed", "total", "charged"):
        table.add_column(
            column,
            justify="left" if column in {"batch", "status", "created"} else "right",
            no_wrap=True,
        )
    for batch in batches:
        table.add_row(
            batch.batch_id,
            batch.status,
            batch.created_at[:19],
            str(batch.images_succeeded),
            str(batch.images_failed),
            usd(batch.costs.total) if batch.costs is not None else "-",
            usd(batch.spent_micro_usd),
        )
    return table


def costs_table(report: dict[str, Any]) -> Table:
    table = Table(
        title=f"charged {report['since']} .. {report['until']} by {report['group_by']}",
        header_style="bold",
    )
    for column in ("group", "images", "charged", "per image"):
        table.add_column(column, justify="left" if column == "group" else "right", no_wrap=True)
    for group in report["groups"]:
        images = int(group["images"])
        spent = int(group["spent_micro_usd"])
        table.add_row(
            group["key"], str(images), usd(spent), usd(spent // images) if images else "-"
        )
        if group.get("active"):
            table.add_row(_active_line(report["group_by"], group["active"]), "", "", "")
    table.add_row("total", "", usd(int(report["total_spent_micro_usd"])), "")
    unattributed = int(report.get("unattributed_idle_micro_usd") or 0)
    if unattributed:
        table.caption = (
            f"of which {usd(unattributed)} is endpoint instance time no batch was charged "
            "(unattributed idle)"
        )
    return table


def _active_line(group_by: str, active: dict[str, int], most: int = 5) -> str:
    """The unattributed idle beside the batches active in its windows, by the report's
    grouping, as shares of it: e.g. `unattributed idle, active: team=x 60%, team=y 40%`."""
    name = group_by.removeprefix("tag:")
    total = sum(active.values()) or 1
    ranked = sorted(active.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{name}={key} {round(100 * share / total)}%" for key, share in ranked[:most]]
    if len(ranked) > most:
        rest = sum(share for _, share in ranked[most:])
        parts.append(f"{len(ranked) - most} more {round(100 * rest / total)}%")
    return f"unattributed idle, active: {', '.join(parts)} (shown, not charged)"


def print_cost(
    console: Console,
    summary: BatchRecord,
    images: Iterable[dict[str, Any]],
    region: str = "us-east-1",
) -> None:
    from imagebatch.api.responses import batch_summary
    from imagebatch.costs.prices import load_aws_prices

    console.print(cost_table(summary, images))
    if summary.created_at and summary.batch_id:
        print_categories(console, batch_summary(summary, load_aws_prices().region(region)))


def print_categories(console: Console, shown: BatchSummary) -> None:
    """The categories table and, where charged and total differ, the line that says why."""
    console.print(categories_table(shown))
    if shown.charge_note:
        console.print(shown.charge_note, markup=False, highlight=False, soft_wrap=True)
