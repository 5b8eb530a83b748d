"""RecordResult: SageMaker async notifications (SNS -> SQS) -> ledger costs + task answers.

Powertools batch processing reports each failed record back to SQS (ReportBatchItemFailures),
so one bad message is retried alone and, after maxReceiveCount, lands in the DLQ.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.sagemaker_contract import AsyncNotification
from imagebatch.observability import logger, tracer
from imagebatch.pipeline.sagemaker_result import InvocationRequest, record_result
from imagebatch.settings import RecordResultSettings, cached_settings

processor = BatchProcessor(event_type=EventType.SQS)


_settings = cached_settings(RecordResultSettings)


class _Invocation:
    """This invocation's memory and its one Lambda request (charged by the first record
    that commits; each record charges its own duration)."""

    memory_mb = 512
    request = InvocationRequest()


def parse_notification(body: str) -> AsyncNotification:
    """The SQS body is the SNS envelope (raw delivery off); its Message is SageMaker's JSON."""
    envelope = json.loads(body)
    message = envelope["Message"] if isinstance(envelope, dict) and "Message" in envelope else body
    return AsyncNotification.model_validate_json(message)


def record_handler(record: SQSRecord) -> None:
    clock = LambdaClock(_Invocation.memory_mb)
    notification = parse_notification(record.body)
    settings = _settings()
    ledger = wiring.ledger(settings)
    record_result(
        notification,
        store=wiring.store(settings),
        ledger=ledger,
        tokens=wiring.task_tokens(),
        costing=wiring.endpoint_costing(settings, ledger),
        clock=clock,
        request=_Invocation.request,
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _Invocation.memory_mb = int(context.memory_limit_in_mb)
    _Invocation.request = InvocationRequest()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
