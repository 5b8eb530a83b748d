"""HTTP API (IAM auth) -> the ledger's batches, summaries, items and costs; read-only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.api.routes import ApiDependencies, resolve
from imagebatch.api.tenancy import scope_for
from imagebatch.observability import logger, tracer
from imagebatch.settings import QuerySettings, cached_settings

_settings = cached_settings(QuerySettings)


@lru_cache(maxsize=1)
def _dependencies() -> ApiDependencies:
    settings = _settings()
    return ApiDependencies(queries=wiring.ledger_queries(settings), prices=wiring.prices(settings))


@lru_cache(maxsize=1)
def _tags_of() -> Callable[[str], Mapping[str, str]]:
    # one per execution environment: it keeps each caller's tags for a few minutes
    return wiring.principal_tags().tags_of


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    dependencies = _dependencies()
    if settings.query_tenancy:
        scope = scope_for(
            event,
            _tags_of(),
            principal_tag=settings.tenancy_principal_tag,
            batch_tag=settings.tenancy_batch_tag,
        )
        dependencies = dependencies.model_copy(update={"scope": scope})
    return resolve(event, context, dependencies)
