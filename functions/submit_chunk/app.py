"""SubmitChunk (lambda:invoke.waitForTaskToken): one chunk -> one SageMaker async request."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch.aws.clients import (
    dynamodb_client,
    s3_client,
    sagemaker_runtime_client,
    sfn_client,
)
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.aws.stepfunctions import TaskTokens
from imagebatch.costs.usage import LambdaClock
from imagebatch.observability import logger, tracer
from imagebatch.pipeline.sagemaker_chunk import SubmitTask, submit_chunk
from imagebatch.pipeline.sagemaker_costing import endpoint_costing
from imagebatch.settings import SubmitChunkSettings, cached_settings

_settings = cached_settings(SubmitChunkSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clock = LambdaClock(int(context.memory_limit_in_mb))
    task = SubmitTask.model_validate(event)
    settings = _settings()
    logger.append_keys(batch_id=task.batch_id, chunk_id=task.chunk.chunk_id)
    ledger = Ledger(dynamodb_client(), settings.ledger_table)
    receipt = submit_chunk(
        task,
        store=BatchStore(s3_client(), task.bucket),
        ledger=ledger,
        endpoint=AsyncEndpoint(
            sagemaker_runtime_client(),
            settings.endpoint_name,
            request_ttl_s=settings.request_ttl_s,
            invocation_timeout_s=settings.invocation_timeout_s,
        ),
        tokens=TaskTokens(sfn_client()),
        costing=endpoint_costing(settings, ledger, submit_memory_mb=clock.memory_mb),
        clock=clock,
    )
    return receipt.model_dump()
