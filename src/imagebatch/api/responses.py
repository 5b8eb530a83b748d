"""The query API's response bodies, and how a ledger item becomes one.

Money is integer micro-dollars throughout. An image item is the ledger's own image record
(models.records.ImageRecord), so the API cannot drift from what the pipeline writes.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

from imagebatch.costs.grouping import CostGroup
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.terms import charge_note
from imagebatch.costs.usage import Usage, per_image, summary_costs
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import ImageRecord


class Costs(BaseModel):
    """Micro-dollars (integers) by category."""

    inference: int
    orchestration: int
    storage: int
    total: int


class Telemetry(BaseModel):
    """What the batch's Lambda invocations cost besides their requests and duration, in
    micro-dollars (integers): part of `costs.orchestration`, each line rounded once
    (costs/telemetry.py: estimated per invocation, not measured)."""

    init: int  # Lambda's INIT phase of the cold starts
    logs: int  # CloudWatch Logs ingestion and storage for LogRetentionDays
    traces: int  # X-Ray traces recorded (an upper bound: one per invocation)


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
    # the orchestration's telemetry lines, by category
    telemetry: Telemetry | None = None
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
    # instance a deploy starts, what a capped batch could not pay); also a line in groups,
    # whose `active` shows it with the batches active in (or nearest before) its windows.
    unattributed_idle_micro_usd: int = 0
    # Set when the range holds more day rollups than one request reads
    # (ledger_queries.MAX_SCANNED_PER_CALL): these groups cover this page only, sum the pages.
    next_token: str | None = None


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


def list_entry(item: BatchRecord, prices: RegionPrices | None = None) -> BatchListEntry:
    return BatchListEntry(
        costs=Costs(**summary_costs(item, prices).rounded()) if prices is not None else None,
        batch_id=item.batch_id,
        status=item.status or "-",
        created_at=item.created_at,
        backend=item.backend,
        tags=item.tags or {},
        images_total=item.images_total,
        images_succeeded=item.images_succeeded,
        images_failed=item.images_failed,
        spent_micro_usd=item.spent_micro_usd,
    )


def batch_summary(summary: BatchRecord, prices: RegionPrices) -> BatchSummary:
    """A ledger summary item as the API and CLI show it: categories priced from counters."""
    breakdown = summary_costs(summary, prices)
    rounded = breakdown.rounded()
    charged = summary.spent_micro_usd
    endpoint_overhead = summary.endpoint_overhead_micro_usd
    succeeded = summary.images_succeeded
    unit = per_image(breakdown, succeeded)
    budget = None
    if summary.max_cost_micro_usd is not None:
        budget = Budget(
            max_cost_micro_usd=summary.max_cost_micro_usd,
            spent_micro_usd=summary.spent_micro_usd,
            reserved_micro_usd=summary.reserved_micro_usd,
            budget_left_micro_usd=summary.budget_left_micro_usd,
            overhead_reserve_micro_usd=summary.overhead_reserve_micro_usd,
            unsettled_micro_usd=summary.unsettled_micro_usd,
        )
    return BatchSummary(
        batch_id=summary.batch_id,
        status=summary.status or "-",
        created_at=summary.created_at,
        finished_at=summary.finished_at,
        backend=summary.backend,
        models=list(summary.models or []),
        tags=summary.tags or {},
        images_total=summary.images_total,
        images_succeeded=succeeded,
        images_failed=summary.images_failed,
        estimate_micro_usd=summary.estimate_total_micro_usd or 0,
        costs=Costs(**rounded),
        telemetry=Telemetry(**breakdown.telemetry()),
        endpoint_overhead_micro_usd=endpoint_overhead,
        charged_micro_usd=charged,
        # the endpoint's share is charged beside the categories: the note explains the rest
        charge_note=charge_note(
            rounded["total"] + endpoint_overhead,
            charged,
            summary.unsettled_micro_usd,
            over_cap_micro_usd=summary.over_cap_micro_usd,
        ),
        max_cost_micro_usd=summary.max_cost_micro_usd,
        cost_per_image=Costs(**unit["per_image"]) if unit["per_image"] else None,
        cost_per_1000=Costs(**unit["per_1000"]) if unit["per_1000"] else None,
        budget=budget,
        usage=Usage.from_summary(summary).model_dump(),
        rejection=summary.rejection,
        failures_by_class=summary.failures_by_class or {},
        images_reused=summary.images_reused,
        reuse_saved_micro_usd=summary.reuse_saved_micro_usd,
    )
