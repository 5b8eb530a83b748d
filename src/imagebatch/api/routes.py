"""The query API (API Gateway HTTP API, IAM auth): batches, one batch, its items, costs.

Routes are thin: validate (Powertools' OpenAPI validation), one ledger read, shape. What they
read the ledger with arrives per request: the handler calls `resolve` with its
ApiDependencies, which puts them in the resolver's context for that one request.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagebatch.api.responses import (
    BatchPage,
    BatchSummary,
    CostReport,
    ImageItem,
    ItemPage,
    batch_summary,
    list_entry,
    route_responses,
)
from imagebatch.aws.ledger_queries import LedgerQueries
from imagebatch.costs.grouping import group_costs
from imagebatch.costs.overhead import UNATTRIBUTED
from imagebatch.costs.prices import RegionPrices
from imagebatch.errors import InvalidTokenError
from imagebatch.models.tenancy import TenantScope

BATCH_ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}(T[0-9:.+Z-]*)?$"
PAGE_KEY_PATTERN = r"^[A-Za-z0-9_=-]{1,2048}$"
TAG_PATTERN = r"^[^:]{1,128}:.{0,256}$"
EARLIEST = "2000-01-01"
_BAD_TOKEN = "next_token is not one this API returned"  # noqa: S105 - a message
_DEPENDENCIES = "imagebatch_dependencies"


class ApiDependencies(BaseModel, arbitrary_types_allowed=True):
    queries: LedgerQueries
    prices: RegionPrices
    #: with tenancy on (api/tenancy.py), the batches this request's caller may read
    scope: TenantScope | None = None


app = APIGatewayHttpResolver(enable_validation=True)


def resolve(
    event: dict[str, Any], context: LambdaContext, dependencies: ApiDependencies
) -> dict[str, Any]:
    """Answers one request with these dependencies; Powertools clears the context after it."""
    # What app.append_context does; that method is untyped, the dict it updates is not.
    app.context[_DEPENDENCIES] = dependencies
    return app.resolve(event, context)


def _deps() -> ApiDependencies:
    dependencies = app.context.get(_DEPENDENCIES)
    if not isinstance(dependencies, ApiDependencies):
        raise RuntimeError("a request reached a route without resolve(): no ApiDependencies")
    return dependencies


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
    responses=route_responses(BatchPage, bad_request=_BAD_TOKEN),
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
    deps = _deps()
    try:
        page = deps.queries.list_batches(
            since=since or EARLIEST,
            until=until or "9999",
            tag=_tag(tag),
            limit=limit,
            next_token=next_token,
            scope=deps.scope,
        )
    except InvalidTokenError as exc:
        raise BadRequestError(str(exc)) from exc
    return BatchPage(
        batches=[list_entry(item, deps.prices) for item in page.items], next_token=page.next_token
    )


@app.get(
    "/batches/<batch_id>",
    summary="One batch's summary and cost by category",
    responses=route_responses(BatchSummary, not_found="no batch with this id"),
)
def get_batch(
    batch_id: Annotated[str, Path(pattern=BATCH_ID_PATTERN)],
) -> BatchSummary:
    deps = _deps()
    summary = deps.queries.batch(batch_id)
    # another team's batch is answered as no batch: its existence is not the caller's to see
    if summary is None or (deps.scope is not None and not deps.scope.admits(summary.tags)):
        raise NotFoundError(f"no batch {batch_id}")
    return batch_summary(summary, deps.prices)


@app.get(
    "/batches/<batch_id>/items",
    summary="A batch's images, filtered by outcome",
    responses=route_responses(
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
    deps = _deps()
    if deps.scope is not None:
        summary = deps.queries.batch(batch_id)
        if summary is None or not deps.scope.admits(summary.tags):
            raise NotFoundError(f"no batch {batch_id}")
    try:
        page = deps.queries.items(
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


@app.get(
    "/costs",
    summary="Spend over a time range, grouped by model, backend or a tag; a bounded page of "
    "day rollups per request (sum the pages: next_token)",
    responses=route_responses(CostReport, bad_request=_BAD_TOKEN),
)
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
    next_token: Annotated[str | None, Query(pattern=PAGE_KEY_PATTERN)] = None,
) -> CostReport:
    since_day = _parse_since(since, 7)[:10]
    until_day = (until or datetime.now(UTC).isoformat())[:10]
    deps = _deps()
    try:
        page = deps.queries.cost_rollup_page(since_day, until_day, next_token=next_token)
    except InvalidTokenError as exc:
        raise BadRequestError(str(exc)) from exc
    rollups = page.items
    if deps.scope is not None:
        # each day rollup carries its batch's tags; unattributed idle has none (no team
        # sees its total), its shares shown with active batches carry theirs
        scope = deps.scope
        rollups = [rollup for rollup in rollups if scope.admits(rollup.get("tags"))]
    groups = group_costs(rollups, group_by)
    return CostReport(
        since=since_day,
        until=until_day,
        group_by=group_by,
        groups=groups,
        total_spent_micro_usd=sum(g.spent_micro_usd for g in groups),
        unattributed_idle_micro_usd=sum(g.spent_micro_usd for g in groups if g.key == UNATTRIBUTED),
        next_token=page.next_token,
    )
