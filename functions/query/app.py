"""HTTP API (IAM auth) -> the ledger's batches, summaries, items and costs; read-only."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.api.routes import ApiDependencies, resolve
from imagebatch.observability import logger, tracer
from imagebatch.settings import StorageSettings, cached_settings

_settings = cached_settings(StorageSettings)


@lru_cache(maxsize=1)
def _dependencies() -> ApiDependencies:
    settings = _settings()
    return ApiDependencies(queries=wiring.ledger_queries(settings), prices=wiring.prices(settings))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(event, context, _dependencies())
