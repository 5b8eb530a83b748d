"""`imagebatch costs` shows the endpoint's unattributed idle with the batches active in its
windows, by the report's grouping (issue 19), and sums it across /costs pages."""

from __future__ import annotations

from typing import Any

from imagebatch_cli.query_client import merge_cost_pages
from imagebatch_cli.views.report import costs_table
from rich.console import Console

from imagebatch.costs.overhead import UNATTRIBUTED


def _page(active: dict[str, int], spent: int) -> dict[str, Any]:
    return {
        "since": "2026-11-22",
        "until": "2026-11-22",
        "group_by": "tag:team",
        "groups": [
            {"key": "x", "images": 3, "inference_micro_usd": 10, "spent_micro_usd": 20},
            {
                "key": UNATTRIBUTED,
                "images": 0,
                "inference_micro_usd": 0,
                "spent_micro_usd": spent,
                "active": active,
            },
        ],
        "total_spent_micro_usd": 20 + spent,
        "unattributed_idle_micro_usd": spent,
    }


def _render(report: dict[str, Any]) -> str:
    console = Console(width=200, record=True)
    console.print(costs_table(report))
    return console.export_text()


def test_unattributed_idle_is_shown_with_the_tags_active_in_its_windows() -> None:
    text = _render(_page({"x": 600, "y": 400}, 1_000))
    assert "unattributed idle, active: team=x 60%, team=y 40% (shown, not charged)" in text


def test_pages_sum_the_active_shares() -> None:
    merged = merge_cost_pages(_page({"x": 600}, 600), _page({"x": 100, "y": 300}, 400))
    (unattributed,) = [g for g in merged["groups"] if g["key"] == UNATTRIBUTED]
    assert unattributed["active"] == {"x": 700, "y": 300}
    assert "active: team=x 70%, team=y 30%" in _render(merged)
