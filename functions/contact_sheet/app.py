"""A finished batch -> reports/<batch-id>/contact-sheet.png and index.html."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch.aws.clients import dynamodb_client, s3_client
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.contact_sheet import ContactSheetEvent, build_batch_contact_sheet
from imagebatch.settings import StorageSettings, cached_settings

_settings = cached_settings(StorageSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    sheet_event = ContactSheetEvent.model_validate(event)
    logger.append_keys(batch_id=sheet_event.batch_id)
    result = build_batch_contact_sheet(
        sheet_event,
        store=BatchStore(s3_client(), sheet_event.bucket),
        ledger=Ledger(dynamodb_client(), _settings().ledger_table),
    )
    return result.model_dump(mode="json")
