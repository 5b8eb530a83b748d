"""One Distributed Map item -> the chunk's images on Bedrock, their costs in one commit."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.costs.usage import LambdaClock
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
        store=wiring.store(settings, task.bucket),
        ledger=wiring.ledger(settings),
        backend=wiring.bedrock_backend(
            settings,
            time_left_ms=context.get_remaining_time_in_millis,
            reserve_ms=settings.commit_reserve_ms,
        ),
        catalogue=wiring.catalogue(),
        concurrency=settings.chunk_concurrency,
        time_left_ms=context.get_remaining_time_in_millis,
        commit_reserve_ms=settings.commit_reserve_ms,
        retry_policy=wiring.retry_policy(settings),
        access_wait=wiring.access_wait(settings),
        prices=wiring.prices(settings),
        clock=clock,
        reuse=settings.reuse_images,
        attempt_id=context.aws_request_id,
    )
    metrics.add_metric(name="ImagesSucceeded", unit=MetricUnit.Count, value=result.succeeded)
    metrics.add_metric(name="ImagesFailed", unit=MetricUnit.Count, value=result.failed)
    metrics.add_metric(name="BedrockThrottles", unit=MetricUnit.Count, value=result.throttles)
    return result.model_dump()
