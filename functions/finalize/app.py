"""End of a batch execution -> every image accounted for, status set, report written."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch.aws.catalog_state import CatalogState
from imagebatch.aws.clients import dynamodb_client, events_client, s3_client
from imagebatch.aws.events import EventBus
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.catalog.nightly import CatalogPublisher
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.batch_events import BatchFinishedNotifier
from imagebatch.pipeline.finalize import FinalizeEvent, finalize_batch
from imagebatch.settings import StorageSettings, cached_settings

_settings = cached_settings(StorageSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clock = LambdaClock(int(context.memory_limit_in_mb))
    finalize_event = FinalizeEvent.model_validate(event)
    logger.append_keys(batch_id=finalize_event.batch_id)
    store = BatchStore(s3_client(), finalize_event.bucket)
    ledger = Ledger(dynamodb_client(), _settings().ledger_table)
    catalog_state = CatalogState(dynamodb_client(), _settings().ledger_table)
    report = finalize_batch(
        finalize_event,
        store=store,
        ledger=ledger,
        prices=load_aws_prices().region(_settings().aws_region),
        clock=clock,
        hooks=[
            CatalogPublisher(store=store, ledger=ledger, state=catalog_state),
            BatchFinishedNotifier(EventBus(events_client()), finalize_event.bucket),
        ],
    )
    metrics.add_metric(name="BatchesFinished", unit=MetricUnit.Count, value=1)
    metrics.add_metric(
        name="ChargedMicroUsd", unit=MetricUnit.Count, value=report.charged_micro_usd
    )
    return report.model_dump(mode="json")
