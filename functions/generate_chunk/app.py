"""One Distributed Map item -> the chunk's images on Bedrock, their costs in one commit."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch.aws.bedrock_runtime import BedrockImageBackend
from imagebatch.aws.clients import bedrock_runtime_client, dynamodb_client, s3_client
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.backends.retry import AccessWait, BackoffPolicy
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkTask
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.generate import generate_chunk
from imagebatch.settings import GenerateSettings, cached_settings

_settings = cached_settings(GenerateSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clock = LambdaClock(int(context.memory_limit_in_mb))
    task = ChunkTask.model_validate(event)
    settings = _settings()
    logger.append_keys(batch_id=task.batch_id, chunk_id=task.chunk.chunk_id)
    result = generate_chunk(
        task,
        store=BatchStore(s3_client(), task.bucket),
        ledger=Ledger(dynamodb_client(), settings.ledger_table),
        backend=BedrockImageBackend(
            bedrock_runtime_client(), load_catalogue(), settings.inference_profile_arns
        ),
        catalogue=load_catalogue(),
        concurrency=settings.chunk_concurrency,
        time_left_ms=context.get_remaining_time_in_millis,
        commit_reserve_ms=settings.commit_reserve_ms,
        retry_policy=BackoffPolicy(
            base_s=settings.retry_base_ms / 1000,
            cap_s=max(settings.retry_cap_ms, settings.retry_base_ms) / 1000,
            max_attempts=settings.retry_max_attempts,
        ),
        access_wait=AccessWait(
            window_s=settings.access_wait_ms / 1000, poll_s=settings.access_poll_ms / 1000
        ),
        prices=load_aws_prices().region(settings.aws_region),
        clock=clock,
    )
    metrics.add_metric(name="ImagesSucceeded", unit=MetricUnit.Count, value=result.succeeded)
    metrics.add_metric(name="ImagesFailed", unit=MetricUnit.Count, value=result.failed)
    metrics.add_metric(name="BedrockThrottles", unit=MetricUnit.Count, value=result.throttles)
    return result.model_dump()
