"""Reuse where money is shown: the query API's batch summary and `imagebatch cost`'s table
(issue 20); a batch without reuse reads as before."""

from __future__ import annotations

from typing import Any

from imagebatch_cli.views.report import cost_table
from rich.console import Console

from imagebatch.api.responses import batch_summary
from imagebatch.costs.prices import load_aws_prices
from imagebatch.models.batch_record import BatchRecord

SUMMARY: dict[str, Any] = {
    "batch_id": "second",
    "status": "SUCCEEDED",
    "created_at": "2026-12-07T17:00:00.000+00:00",
    "images_total": 5,
    "images_succeeded": 5,
    "images_failed": 0,
    "cost_micro_usd": 80_000,
    "spent_micro_usd": 80_100,
}


def record(**more: Any) -> BatchRecord:
    return BatchRecord.model_validate({**SUMMARY, **more})


def rendered(summary: BatchRecord) -> str:
    console = Console(width=120, record=True)
    console.print(cost_table(summary))
    return console.export_text()


def test_the_summary_counts_reused_images_and_what_they_saved() -> None:
    prices = load_aws_prices().region("us-east-1")
    shown = batch_summary(record(images_reused=4, reuse_saved_micro_usd=320_000), prices)
    assert (shown.images_reused, shown.reuse_saved_micro_usd) == (4, 320_000)
    plain = batch_summary(record(), prices)
    assert (plain.images_reused, plain.reuse_saved_micro_usd) == (0, 0)


def test_cost_shows_reuse_only_for_a_batch_that_reused() -> None:
    text = rendered(record(images_reused=4, reuse_saved_micro_usd=320_000))
    assert "of which reused" in text and "4" in text
    assert "saved by reuse" in text and "$0.320000" in text
    assert "reused" not in rendered(record())


def test_costs_total_what_reuse_saved_per_team_tag() -> None:
    from imagebatch.costs.grouping import group_costs

    rollups = [
        {"batch_id": "a", "tags": {"team": "web"}, "images": 5, "spent_micro_usd": 400_100},
        {
            "batch_id": "b",
            "tags": {"team": "web"},
            "images": 5,
            "spent_micro_usd": 80_100,
            "reuse_saved_micro_usd": 320_000,
        },
        {"batch_id": "c", "tags": {"team": "app"}, "images": 1, "spent_micro_usd": 80_000},
    ]
    groups = {g.key: g for g in group_costs(rollups, "tag:team")}
    assert groups["web"].reuse_saved_micro_usd == 320_000
    assert groups["app"].reuse_saved_micro_usd == 0
