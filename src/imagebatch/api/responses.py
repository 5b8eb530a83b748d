"""The query API's response bodies, and how a ledger item becomes one.

Money is integer micro-dollars throughout. An image item is the ledger's own image record
(models.records.ImageRecord), so the API cannot drift from what the pipeline writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

from imagebatch.costs.grouping import CostGroup
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.terms import charge_note
from imagebatch.costs.usage import Usage, per_image, summary_costs
from imagebatch.models.records import ImageRecord


class Costs(BaseModel):
    """Micro-dollars (integers) by category."""

    inference: int
    orchestration: int
    storage: int
    total: int


class Budget(BaseModel):
    max_cost_micro_usd: int
    spent_micro_usd: int
    reserved_micro_usd: int
    budget_left_micro_usd: int
    overhead_reserve_micro_usd: int
    unsettled_micro_usd: int


class BatchSummary(BaseModel):
    """One batch. `costs` are the categories and their total; `charged_micro_usd` is what the
    budget was charged (the ledger's spent), and `charge_note` says why it differs from the
    total when it does (costs/terms.py)."""

    batch_id: str
    status: str
    created_at: str
    finished_at: str | None = None
    backend: str | None = None
    models: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    images_total: int
    images_succeeded: int
    images_failed: int
    estimate_micro_usd: int
    costs: Costs
    charged_micro_usd: int = 0
    charge_note: str | None = None
    max_cost_micro_usd: int | None = None
    # The endpoint's cold start and idle time charged to the batch (docs/sagemaker.md), once
    # its windows of instance time close; in budget.spent, beside the categories above.
    endpoint_overhead_micro_usd: int = 0
    cost_per_image: Costs | None = None
    cost_per_1000: Costs | None = None
    budget: Budget | None = None
    usage: dict[str, int]
    rejection: str | None = None
    failures_by_class: dict[str, int] = Field(default_factory=dict)
    # Images copied from an earlier batch's image of the same identity (docs/reuse.md), in
    # images_succeeded, and the inference they did not buy.
    images_reused: int = 0
    reuse_saved_micro_usd: int = 0


class BatchListEntry(BaseModel):
    """One batch in a list: `costs.total` is its cost, `spent_micro_usd` what its budget was
    charged (labelled "charged" in the CLI)."""

    batch_id: str
    status: str
    created_at: str
    backend: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    images_total: int
    images_succeeded: int
    images_failed: int
    spent_micro_usd: int
    costs: Costs | None = None


class BatchPage(BaseModel):
    batches: list[BatchListEntry]
    next_token: str | None = None


class ImageItem(ImageRecord):
    """One image of a batch: its outcome, where it is, what it cost, or why it failed."""


class ItemPage(BaseModel):
    items: list[ImageItem]
    next_token: str | None = None


class CostReport(BaseModel):
    since: str
    until: str
    group_by: str
    groups: list[CostGroup]
    total_spent_micro_usd: int
    # Self-hosted instance time no batch was charged (a window that served nothing, the
    # instance a deploy starts, what a capped batch could not pay); also a line in groups.
    unattributed_idle_micro_usd: int = 0


class ErrorBody(BaseModel):
    """What Powertools answers for a 400 or 404."""

    statusCode: int
    message: str


def route_responses(model: type[BaseModel], **errors: str) -> dict[int, OpenAPIResponse]:
    """The 200 response with its model, and the error statuses a route answers with."""
    codes = {"bad_request": 400, "not_found": 404}
    responses: dict[int, OpenAPIResponse] = {
        200: {"description": "OK", "content": {"application/json": {"model": model}}}
    }
    for name, description in errors.items():
        responses[codes[name]] = {
            "description": description,
            "content": {"application/json": {"model": ErrorBody}},
        }
    return responses


def list_entry(item: Mapping[str, Any], prices: RegionPrices | None = None) -> BatchListEntry:
    return BatchListEntry(
        costs=Costs(**summary_costs(item, prices).rounded()) if prices is not None else None,
        batch_id=item["batch_id"],
        status=item.get("status", "-"),
        created_at=item["created_at"],
        backend=item.get("backend"),
        tags=item.get("tags") or {},
        images_total=int(item.get("images_total", 0)),
        images_succeeded=int(item.get("images_succeeded", 0)),
        images_failed=int(item.get("images_failed", 0)),
        spent_micro_usd=int(item.get("spent_micro_usd", 0)),
    )


def batch_summary(summary: Mapping[str, Any], prices: RegionPrices) -> BatchSummary:
    """A ledger summary item as the API and CLI show it: categories priced from counters."""
    breakdown = summary_costs(summary, prices)
    rounded = breakdown.rounded()
    charged = int(summary.get("spent_micro_usd", 0))
    endpoint_overhead = int(summary.get("endpoint_overhead_micro_usd", 0))
    succeeded = int(summary.get("images_succeeded", 0))
    unit = per_image(breakdown, succeeded)
    budget = None
    if summary.get("max_cost_micro_usd") is not None:
        budget = Budget(
            max_cost_micro_usd=int(summary["max_cost_micro_usd"]),
            spent_micro_usd=int(summary.get("spent_micro_usd", 0)),
            reserved_micro_usd=int(summary.get("reserved_micro_usd", 0)),
            budget_left_micro_usd=int(summary.get("budget_left_micro_usd", 0)),
            overhead_reserve_micro_usd=int(summary.get("overhead_reserve_micro_usd", 0)),
            unsettled_micro_usd=int(summary.get("unsettled_micro_usd", 0)),
        )
    return BatchSummary(
        batch_id=summary["batch_id"],
        status=summary.get("status", "-"),
        created_at=summary["created_at"],
        finished_at=summary.get("finished_at"),
        backend=summary.get("backend"),
        models=list(summary.get("models") or []),
        tags=summary.get("tags") or {},
        images_total=int(summary.get("images_total", 0)),
        images_succeeded=succeeded,
        images_failed=int(summary.get("images_failed", 0)),
        estimate_micro_usd=int(summary.get("estimate_micro_usd", 0)),
        costs=Costs(**rounded),
        endpoint_overhead_micro_usd=endpoint_overhead,
        charged_micro_usd=charged,
        # the endpoint's share is charged beside the categories: the note explains the rest
        charge_note=charge_note(
            rounded["total"] + endpoint_overhead,
            charged,
            int(summary.get("unsettled_micro_usd", 0)),
        ),
        max_cost_micro_usd=int(summary["max_cost_micro_usd"])
        if summary.get("max_cost_micro_usd") is not None
        else None,
        cost_per_image=Costs(**unit["per_image"]) if unit["per_image"] else None,
        cost_per_1000=Costs(**unit["per_1000"]) if unit["per_1000"] else None,
        budget=budget,
        usage=Usage.from_summary(summary).model_dump(),
        rejection=summary.get("rejection"),
        failures_by_class=summary.get("failures_by_class") or {},
        images_reused=int(summary.get("images_reused", 0)),
        reuse_saved_micro_usd=int(summary.get("reuse_saved_micro_usd", 0)),
    )
