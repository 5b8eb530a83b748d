"""A finished batch -> reports/<batch-id>/contact-sheet*.png and index*.html, charged to it.

A large batch's sheet takes several invocations: one out of time raises ContactSheetUnfinished
after recording where it stopped, and the state machine's Retry goes on from there."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.costs.usage import LambdaClock
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.contact_sheet import ContactSheetEvent
from imagebatch.pipeline.contact_sheet_cost import build_and_charge
from imagebatch.settings import StorageSettings, cached_settings

_settings = cached_settings(StorageSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clock = LambdaClock(int(context.memory_limit_in_mb))
    sheet_event = ContactSheetEvent.model_validate(event)
    logger.append_keys(batch_id=sheet_event.batch_id)
    settings = _settings()
    charge = build_and_charge(
        sheet_event,
        store=wiring.store(settings, sheet_event.bucket),
        ledger=wiring.ledger(settings),
        prices=wiring.prices(settings),
        clock=clock,
        remaining_s=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    # the sheet's keys as before, and what it charged the batch
    sheet = charge.result.model_dump(mode="json") if charge.result else {}
    return {**sheet, **charge.model_dump(mode="json", exclude={"result"})}
