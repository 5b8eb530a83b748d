"""The query API (API Gateway HTTP API, IAM auth): batches, one batch, its items, costs.

Routes are thin: validate (Powertools' OpenAPI validation), one ledger read, shape. The
OpenAPI document is generated from this module (`openapi_document()`) and published as
schemas/openapi.json; a test keeps the file current.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

from imagebatch.aws.ledger_queries import LedgerQueries
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.usage import Usage, per_image, summary_costs
from imagebatch.errors import InvalidTokenError

TITLE = "imagebatch query API"
VERSION = "1.0.0"
BATCH_ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}(T[0-9:.+Z-]*)?$"
PAGE_KEY_PATTERN = r"^[A-Za-z0-9_=-]{1,2048}$"
TAG_PATTERN = r"^[^:]{1,128}:.{0,256}$"
EARLIEST = "2000-01-01"


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
    cost_per_image: Costs | None = None
    cost_per_1000: Costs | None = None
    budget: Budget | None = None
    usage: dict[str, int]
    rejection: str | None = None
    failures_by_class: dict[str, int] = Field(default_factory=dict)


class BatchListEntry(BaseModel):
    batch_id: str
    status: str
    created_at: str
    backend: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    images_total: int
    images_succeeded: int
    images_failed: int
    spent_micro_usd: int


class BatchPage(BaseModel):
    batches: list[BatchListEntry]
    next_token: str | None = None


class ImageItem(BaseModel):
    image_id: str
    item_id: str
    chunk_id: str
    status: Literal["SUCCEEDED", "FAILED"]
    model: str
    backend: str
    seed: int
    cost_micro_usd: int
    output_key: str | None = None
    failure_class: str | None = None
    failure_reason: str | None = None


class ItemPage(BaseModel):
    items: list[ImageItem]
    next_token: str | None = None


class CostGroup(BaseModel):
    key: str
    images: int
    inference_micro_usd: int
    spent_micro_usd: int


class CostReport(BaseModel):
    since: str
    until: str
    group_by: str
    groups: list[CostGroup]
    total_spent_micro_usd: int


class ErrorBody(BaseModel):
    """What Powertools answers for a 400 or 404."""

    statusCode: int
    message: str


def _responses(model: type[BaseModel], **errors: str) -> dict[int, OpenAPIResponse]:
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


_BAD_TOKEN = "next_token is not one this API returned"  # noqa: S105 - a message


class ApiDependencies(BaseModel, arbitrary_types_allowed=True):
    queries: LedgerQueries
    prices: RegionPrices


_dependencies: Callable[[], ApiDependencies] | None = None

app = APIGatewayHttpResolver(enable_validation=True)


def configure(factory: Callable[[], ApiDependencies]) -> None:
    """Handlers pass a factory so clients are built on first use, not at import."""
    global _dependencies  # noqa: PLW0603 - one resolver per process, like the Lambda runtime
    _dependencies = factory


def _deps() -> ApiDependencies:
    if _dependencies is None:
        raise RuntimeError("imagebatch.api.routes.configure() was not called")
    return _dependencies()


def _parse_since(value: str | None, default_days: int) -> str:
    if value is None:
        return (datetime.now(UTC) - timedelta(days=default_days)).isoformat()
    return value


def _tag(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    key, _, tag_value = value.partition(":")
    return key, tag_value


@app.get(
    "/batches",
    summary="List batches, newest first",
    responses=_responses(BatchPage, bad_request=_BAD_TOKEN),
)
def list_batches(
    since: Annotated[
        str | None, Query(pattern=TIMESTAMP_PATTERN, description="ISO date/time, inclusive")
    ] = None,
    until: Annotated[str | None, Query(pattern=TIMESTAMP_PATTERN)] = None,
    tag: Annotated[
        str | None, Query(pattern=TAG_PATTERN, description="key:value, a batch tag")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    next_token: Annotated[str | None, Query(pattern=PAGE_KEY_PATTERN)] = None,
) -> BatchPage:
    try:
        page = _deps().queries.list_batches(
            since=since or EARLIEST,
            until=until or "9999",
            tag=_tag(tag),
            limit=limit,
            next_token=next_token,
        )
    except InvalidTokenError as exc:
        raise BadRequestError(str(exc)) from exc
    return BatchPage(batches=[_list_entry(item) for item in page.items], next_token=page.next_token)


@app.get(
    "/batches/<batch_id>",
    summary="One batch's summary and cost by category",
    responses=_responses(BatchSummary, not_found="no batch with this id"),
)
def get_batch(
    batch_id: Annotated[str, Path(pattern=BATCH_ID_PATTERN)],
) -> BatchSummary:
    deps = _deps()
    summary = deps.queries.batch(batch_id)
    if summary is None:
        raise NotFoundError(f"no batch {batch_id}")
    return batch_summary(summary, deps.prices)


@app.get(
    "/batches/<batch_id>/items",
    summary="A batch's images, filtered by outcome",
    responses=_responses(
        ItemPage, bad_request=_BAD_TOKEN, not_found="a batch id no route can match"
    ),
)
def list_items(
    batch_id: Annotated[str, Path(pattern=BATCH_ID_PATTERN)],
    status: Annotated[Literal["SUCCEEDED", "FAILED"] | None, Query()] = None,
    failure_class: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    next_token: Annotated[str | None, Query(pattern=PAGE_KEY_PATTERN)] = None,
) -> ItemPage:
    try:
        page = _deps().queries.items(
            batch_id,
            status=status,
            failure_class=failure_class,
            limit=limit,
            next_token=next_token,
        )
    except InvalidTokenError as exc:
        raise BadRequestError(str(exc)) from exc
    return ItemPage(
        items=[ImageItem.model_validate(item, from_attributes=False) for item in page.items],
        next_token=page.next_token,
    )


@app.get("/costs", summary="Spend over a time range, grouped by model, backend or a tag")
def costs(
    since: Annotated[str | None, Query(pattern=TIMESTAMP_PATTERN)] = None,
    until: Annotated[str | None, Query(pattern=TIMESTAMP_PATTERN)] = None,
    group_by: Annotated[
        str,
        Query(
            pattern=r"^(model|backend|batch|tag:[^:]{1,128})$",
            description="model, backend, batch or tag:<key>",
        ),
    ] = "model",
) -> CostReport:
    since_day = _parse_since(since, 7)[:10]
    until_day = (until or datetime.now(UTC).isoformat())[:10]
    rollups = _deps().queries.cost_rollups(since_day, until_day)
    groups = group_costs(rollups, group_by)
    return CostReport(
        since=since_day,
        until=until_day,
        group_by=group_by,
        groups=groups,
        total_spent_micro_usd=sum(g.spent_micro_usd for g in groups),
    )


def group_costs(rollups: Iterable[Mapping[str, Any]], group_by: str) -> list[CostGroup]:
    """Sum day rollups by model (their per-model attributes), backend, batch or a tag."""
    totals: dict[str, list[int]] = {}

    def add(key: str, images: int, inference: int, spent: int) -> None:
        entry = totals.setdefault(key, [0, 0, 0])
        entry[0] += images
        entry[1] += inference
        entry[2] += spent

    for rollup in rollups:
        if group_by == "model":
            for name, value in rollup.items():
                if name.startswith("model_spent#"):
                    model = name.removeprefix("model_spent#")
                    add(model, int(rollup.get(f"model_images#{model}", 0)), 0, int(value))
            continue
        if group_by == "backend":
            key = str(rollup.get("backend", "-"))
        elif group_by == "batch":
            key = str(rollup.get("batch_id"))
        else:
            key = str((rollup.get("tags") or {}).get(group_by.removeprefix("tag:"), "(untagged)"))
        add(
            key,
            int(rollup.get("images", 0)),
            int(rollup.get("inference_micro_usd", 0)),
            int(rollup.get("spent_micro_usd", 0)),
        )
    return [
        CostGroup(key=key, images=v[0], inference_micro_usd=v[1], spent_micro_usd=v[2])
        for key, v in sorted(totals.items(), key=lambda kv: -kv[1][2])
    ]


def _list_entry(item: Mapping[str, Any]) -> BatchListEntry:
    return BatchListEntry(
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
        costs=Costs(**breakdown.rounded()),
        cost_per_image=Costs(**unit["per_image"]) if unit["per_image"] else None,
        cost_per_1000=Costs(**unit["per_1000"]) if unit["per_1000"] else None,
        budget=budget,
        usage=Usage.from_summary(summary).model_dump(),
        rejection=summary.get("rejection"),
        failures_by_class=summary.get("failures_by_class") or {},
    )


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title=TITLE,
            version=VERSION,
            description="Read the imagebatch cost ledger. Every request is signed with SigV4 "
            "(API Gateway AWS_IAM authorization). Money is integer micro-dollars.",
        )
    )
    # Powertools declares `msg` required in ValidationError but its 422 bodies carry only
    # `loc` and `type` (schemathesis found it): publish what the handler really sends.
    validation_error = document["components"]["schemas"]["ValidationError"]
    validation_error["required"] = [n for n in validation_error["required"] if n != "msg"]
    # API Gateway's IAM authorization: requests carry a SigV4 Authorization header.
    document.setdefault("components", {})["securitySchemes"] = {
        "sigv4": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "x-amazon-apigateway-authtype": "awsSigv4",
        }
    }
    document["security"] = [{"sigv4": []}]
    return document


OPENAPI_FILE = "openapi.json"


def openapi_text() -> str:
    """The exact text committed as schemas/openapi.json, so a test can tell when it drifts."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
