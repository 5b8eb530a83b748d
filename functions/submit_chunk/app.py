"""SubmitChunk (lambda:invoke.waitForTaskToken): one chunk -> one SageMaker async request."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch.async_endpoint import SubmitTask, submit_chunk
from imagebatch.clients import (
    dynamodb_client,
    s3_client,
    sagemaker_runtime_client,
    sfn_client,
)
from imagebatch.config import SubmitChunkSettings
from imagebatch.ledger import Ledger
from imagebatch.observability import logger, tracer
from imagebatch.storage import BatchStore


@lru_cache(maxsize=1)
def _settings() -> SubmitChunkSettings:
    return SubmitChunkSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = SubmitTask.model_validate(event)
    settings = _settings()
    logger.append_keys(batch_id=task.batch_id, chunk_id=task.chunk.chunk_id)
    receipt = submit_chunk(
        task,
        store=BatchStore(s3_client(), task.bucket),
        ledger=Ledger(dynamodb_client(), settings.ledger_table),
        runtime=sagemaker_runtime_client(),
        sfn=sfn_client(),
        endpoint_name=settings.endpoint_name,
        request_ttl_s=settings.request_ttl_s,
        invocation_timeout_s=settings.invocation_timeout_s,
    )
    return receipt.model_dump()
