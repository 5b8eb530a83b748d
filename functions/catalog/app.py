"""EventBridge Scheduler (nightly) -> each catalog's changed variants as a manifest in S3."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.catalog.nightly import CatalogRunEvent, run_catalogs
from imagebatch.observability import logger, metrics, tracer
from imagebatch.settings import StorageSettings, cached_settings

_settings = cached_settings(StorageSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    results = run_catalogs(
        CatalogRunEvent.model_validate(event),
        store=wiring.store(settings),
        state=wiring.catalog_state(settings),
    )
    for result in results:
        metrics.add_metric("CatalogVariantsChanged", MetricUnit.Count, result.changed)
        metrics.add_metric("CatalogProductErrors", MetricUnit.Count, result.errors)
    return {"catalogs": [result.model_dump(mode="json") for result in results]}
