"""End of a batch execution -> every image accounted for, status set, report written."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.catalog.nightly import CatalogPublisher
from imagebatch.costs.usage import LambdaClock
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.batch_events import BatchFinishedNotifier
from imagebatch.pipeline.finalize import FinalizeEvent, finalize_batch
from imagebatch.settings import FinalizeSettings, cached_settings

_settings = cached_settings(FinalizeSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clock = LambdaClock(int(context.memory_limit_in_mb), request_id=context.aws_request_id)
    finalize_event = FinalizeEvent.model_validate(event)
    logger.append_keys(batch_id=finalize_event.batch_id)
    settings = _settings()
    store = wiring.store(settings, finalize_event.bucket)
    ledger = wiring.ledger(settings)
    report = finalize_batch(
        finalize_event,
        store=store,
        ledger=ledger,
        prices=wiring.prices(settings),
        clock=clock,
        hooks=[
            CatalogPublisher(store=store, ledger=ledger, state=wiring.catalog_state(settings)),
            BatchFinishedNotifier(wiring.event_bus(settings), finalize_event.bucket),
        ],
    )
    metrics.add_metric(name="BatchesFinished", unit=MetricUnit.Count, value=1)
    metrics.add_metric(
        name="ChargedMicroUsd", unit=MetricUnit.Count, value=report.charged_micro_usd
    )
    return report.model_dump(mode="json")
