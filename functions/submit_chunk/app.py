"""SubmitChunk (lambda:invoke.waitForTaskToken): one chunk -> one SageMaker async request."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.costs.usage import LambdaClock
from imagebatch.observability import logger, tracer
from imagebatch.pipeline.sagemaker_submit import SubmitTask, submit_chunk
from imagebatch.settings import SubmitChunkSettings, cached_settings

_settings = cached_settings(SubmitChunkSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clock = LambdaClock(int(context.memory_limit_in_mb))
    task = SubmitTask.model_validate(event)
    settings = _settings()
    logger.append_keys(batch_id=task.batch_id, chunk_id=task.chunk.chunk_id)
    ledger = wiring.ledger(settings)
    receipt = submit_chunk(
        task,
        store=wiring.store(settings, task.bucket),
        ledger=ledger,
        endpoint=wiring.async_endpoint(settings),
        tokens=wiring.task_tokens(),
        costing=wiring.endpoint_costing(settings, ledger, submit_memory_mb=clock.memory_mb),
        clock=clock,
        reuse=settings.reuse_images,
        time_left_s=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    return receipt.model_dump()
