"""RecordResult: SageMaker async notifications (SNS -> SQS) -> ledger costs + task answers.

Powertools batch processing reports each failed record back to SQS (ReportBatchItemFailures),
so one bad message is retried alone and, after maxReceiveCount, lands in the DLQ. A message
that is not provably the endpoint's (pipeline/result_authentication.py) is not retried: it is
logged, counted (ForgedResultsDropped) and dropped.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.costs.usage import LambdaClock
from imagebatch.errors import ForgedResultError
from imagebatch.models.sagemaker_contract import AsyncNotification
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.result_authentication import notification_from
from imagebatch.pipeline.sagemaker_result import InvocationRequest, record_result
from imagebatch.settings import RecordResultSettings, cached_settings

processor = BatchProcessor(event_type=EventType.SQS)


_settings = cached_settings(RecordResultSettings)


class _Invocation:
    """This invocation's memory and its one Lambda request (charged by the first record
    that commits; each record charges its own duration)."""

    memory_mb = 512
    request = InvocationRequest()


def parse_notification(body: str, topics: frozenset[str]) -> AsyncNotification:
    """The SQS body is the SNS envelope (raw delivery off) of one of `topics`; its Message is
    SageMaker's JSON. ForgedResultError otherwise."""
    return notification_from(body, topics)


def _count_forged(_: ForgedResultError) -> None:
    metrics.add_metric("ForgedResultsDropped", MetricUnit.Count, 1)


def record_handler(record: SQSRecord) -> None:
    clock = LambdaClock(_Invocation.memory_mb)
    settings = _settings()
    try:
        notification = parse_notification(record.body, settings.result_topic_arns)
    except ForgedResultError as exc:
        logger.warning("forged result dropped", extra={"reason": str(exc)})
        _count_forged(exc)
        return
    ledger = wiring.ledger(settings)
    record_result(
        notification,
        store=wiring.store(settings),
        ledger=ledger,
        tokens=wiring.task_tokens(),
        costing=wiring.endpoint_costing(settings, ledger),
        clock=clock,
        request=_Invocation.request,
        on_forged=_count_forged,
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _Invocation.memory_mb = int(context.memory_limit_in_mb)
    _Invocation.request = InvocationRequest()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
