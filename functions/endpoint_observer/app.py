"""Schedule tick or "SageMaker Endpoint State Change" event -> the endpoint's instance
counts recorded, closed windows of instance time attributed to batches (docs/sagemaker.md).

Both triggers do the same thing: the event only makes the look come sooner than the tick.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch.aws.clients import dynamodb_client, sagemaker_client
from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.sagemaker_endpoints import EndpointInstances
from imagebatch.costs.prices import load_aws_prices
from imagebatch.observability import logger, tracer
from imagebatch.pipeline.endpoint_observer import observe_endpoint
from imagebatch.settings import EndpointObserverSettings, cached_settings

_settings = cached_settings(EndpointObserverSettings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    logger.append_keys(trigger=event.get("detail-type", "schedule"))
    run = observe_endpoint(
        EndpointInstances(sagemaker_client(), settings.endpoint_name),
        EndpointUsageStore(dynamodb_client(), settings.ledger_table),
        load_aws_prices().region(settings.aws_region).instance(settings.instance_type),
        now=lambda: datetime.now(UTC),
        settle=timedelta(seconds=settings.settle_s),
    )
    return {
        "desired": run.sample.desired,
        "current": run.sample.current,
        "recorded": run.recorded,
        "windows_attributed": len(run.attributed),
    }
