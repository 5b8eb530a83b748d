"""Spend over a time range: the ledger's day rollups summed by model, backend, batch or tag."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from imagebatch.costs.overhead import UNATTRIBUTED

# A day's share of the unattributed idle shown with one batch active in its windows
# (aws.endpoint_usage): never spent, so never summed as charged.
UNATTRIBUTED_SHARE = "unattributed_share_micro_usd"


class CostGroup(BaseModel):
    key: str
    images: int
    inference_micro_usd: int
    spent_micro_usd: int
    # Inference reused images did not buy (docs/reuse.md); the day rollup keeps it per
    # batch, not per model, so a grouping by model shows 0.
    reuse_saved_micro_usd: int = 0
    # The unattributed idle line only: what of it is shown with the batches active in (or
    # nearest before) its windows, by the same grouping (a tag's value, a batch, ...),
    # split by their inference seconds. Shown, not charged: a cap is hard.
    active: dict[str, int] = Field(default_factory=dict)


def _grouping_key(rollup: Mapping[str, Any], group_by: str, batch_id: str) -> str:
    if group_by == "model":
        return str(rollup.get("model") or "-")
    if group_by == "backend":
        return str(rollup.get("backend", "-"))
    if group_by == "batch":
        return batch_id
    return str((rollup.get("tags") or {}).get(group_by.removeprefix("tag:"), "(untagged)"))


def group_costs(rollups: Iterable[Mapping[str, Any]], group_by: str) -> list[CostGroup]:
    """Sum day rollups by model (their per-model attributes), backend, batch or a tag; the
    endpoint's unattributed idle is always a line of its own, with the batches active in its
    windows by the same grouping (`active`)."""
    totals: dict[str, list[int]] = {}
    active: dict[str, int] = {}

    def add(key: str, images: int, inference: int, spent: int, saved: int = 0) -> None:
        entry = totals.setdefault(key, [0, 0, 0, 0])
        entry[0] += images
        entry[1] += inference
        entry[2] += spent
        entry[3] += saved

    for rollup in rollups:
        if rollup.get("batch_id") == UNATTRIBUTED and "active_batch_id" in rollup:
            key = _grouping_key(rollup, group_by, str(rollup["active_batch_id"]))
            active[key] = active.get(key, 0) + int(rollup.get(UNATTRIBUTED_SHARE, 0))
            add(UNATTRIBUTED, 0, 0, 0)
            continue
        if rollup.get("batch_id") == UNATTRIBUTED:
            # the endpoint's instance time no batch was charged: its own line, however grouped
            add(UNATTRIBUTED, 0, 0, int(rollup.get("spent_micro_usd", 0)))
            continue
        if group_by == "model":
            for name, value in rollup.items():
                if name.startswith("model_spent#"):
                    model = name.removeprefix("model_spent#")
                    add(model, int(rollup.get(f"model_images#{model}", 0)), 0, int(value))
            continue
        add(
            _grouping_key(rollup, group_by, str(rollup.get("batch_id"))),
            int(rollup.get("images", 0)),
            int(rollup.get("inference_micro_usd", 0)),
            int(rollup.get("spent_micro_usd", 0)),
            int(rollup.get("reuse_saved_micro_usd", 0)),
        )
    return [
        CostGroup(
            key=key,
            images=v[0],
            inference_micro_usd=v[1],
            spent_micro_usd=v[2],
            reuse_saved_micro_usd=v[3],
            active=dict(sorted(active.items(), key=lambda kv: (-kv[1], kv[0])))
            if key == UNATTRIBUTED
            else {},
        )
        for key, v in sorted(totals.items(), key=lambda kv: -kv[1][2])
    ]
