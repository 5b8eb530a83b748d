"""Tables a person reads: a batch's cost summary and its failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from imagebatch.costs import terms


def usd(micro: int) -> str:
    return f"${micro / 1_000_000:,.6f}"


def cost_table(summary: dict[str, Any], images: Iterable[dict[str, Any]] = ()) -> Table:
    """The batch: status, images, estimate and budget; per-model lines from the image records.
    Money by category is categories_table's (one vocabulary: imagebatch.costs.terms)."""
    table = Table(title=f"batch {summary['batch_id']}", show_header=True, header_style="bold")
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    rows: list[tuple[str, str]] = [
        ("status", str(summary.get("status"))),
        ("backend", str(summary.get("backend", "-"))),
        ("images requested", str(summary.get("images_total", 0))),
        ("images made", str(summary.get("images_succeeded", 0))),
    ]
    # only a batch that reused images shows the lines, so other batches read as before
    if summary.get("images_reused"):
        rows.append((terms.REUSED, str(summary["images_reused"])))
        rows.append((terms.REUSE_SAVED, usd(int(summary.get("reuse_saved_micro_usd", 0)))))
    rows += [
        ("images failed", str(summary.get("images_failed", 0))),
        ("invalid manifest lines", str(summary.get("invalid_lines", 0))),
        (terms.ESTIMATE, usd(int(summary.get("estimate_micro_usd", 0)))),
    ]
    if summary.get("max_cost_micro_usd"):
        rows.append((terms.BUDGET, usd(int(summary["max_cost_micro_usd"]))))
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
    if summary.get("rejection"):
        rows.append(("rejected because", str(summary["rejection"])))
    for row in rows:
        table.add_row(*row)
    return table


def categories_table(summary: dict[str, Any]) -> Table:
    """Cost by category, their total and what the budget was charged, per image and per
    1,000 images (the API's batch summary shape)."""
    table = Table(title=f"cost of {summary['batch_id']}", header_style="bold")
    for column in ("", "batch", "per image made", "per 1,000 images"):
        table.add_column(column, justify="left" if not column else "right", no_wrap=True)
    per_image = summary.get("cost_per_image") or {}
    per_1000 = summary.get("cost_per_1000") or {}
    for category, label in terms.CATEGORY_LABELS.items():
        table.add_row(
            label,
            usd(int(summary["costs"][category])),
            usd(int(per_image[category])) if category in per_image else "-",
            usd(int(per_1000[category])) if category in per_1000 else "-",
        )
    endpoint = int(summary.get("endpoint_overhead_micro_usd") or 0)
    if endpoint:
        table.add_row("endpoint cold start + idle", usd(endpoint), "-", "-")
    table.add_row(terms.CHARGED, usd(int(summary.get("charged_micro_usd", 0))), "", "")
    budget = summary.get("max_cost_micro_usd")
    if budget:
        table.add_row(terms.BUDGET, usd(int(budget)), "", "")
    return table


def batches_table(batches: list[dict[str, Any]]) -> Table:
    table = Table(title="batches, newest first", header_style="bold")
    for column in ("batch", "status", "created", "made", "failed", "total", "charged"):
        table.add_column(
            column,
            justify="left" if column in {"batch", "status", "created"} else "right",
            no_wrap=True,
        )
    for batch in batches:
        costs = batch.get("costs") or {}
        table.add_row(
            batch["batch_id"],
            batch["status"],
            batch["created_at"][:19],
            str(batch["images_succeeded"]),
            str(batch["images_failed"]),
            usd(int(costs["total"])) if "total" in costs else "-",
            usd(int(batch["spent_micro_usd"])),
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
    table.add_row("total", "", usd(int(report["total_spent_micro_usd"])), "")
    unattributed = int(report.get("unattributed_idle_micro_usd") or 0)
    if unattributed:
        table.caption = (
            f"of which {usd(unattributed)} is endpoint instance time no batch was charged "
            "(unattributed idle)"
        )
    return table


def print_cost(
    console: Console,
    summary: dict[str, Any],
    images: Iterable[dict[str, Any]],
    region: str = "us-east-1",
) -> None:
    from imagebatch.api.responses import batch_summary
    from imagebatch.costs.prices import load_aws_prices

    console.print(cost_table(summary, images))
    if summary.get("created_at") and summary.get("batch_id"):
        shaped = batch_summary(summary, load_aws_prices().region(region)).model_dump()
        print_categories(console, shaped)


def print_categories(console: Console, shaped: dict[str, Any]) -> None:
    """The categories table and, where charged and total differ, the line that says why."""
    console.print(categories_table(shaped))
    if shaped.get("charge_note"):
        console.print(shaped["charge_note"], markup=False, highlight=False, soft_wrap=True)
