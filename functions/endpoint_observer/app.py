"""Schedule tick or "SageMaker Endpoint State Change" event -> the endpoint's instance
counts recorded, closed windows of instance time attributed to batches (docs/sagemaker.md).

Both triggers do the same thing: the event only makes the look come sooner than the tick.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
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
        wiring.endpoint_instances(settings),
        wiring.observer_usage(settings),
        wiring.prices(settings).instance(settings.instance_type),
        now=lambda: datetime.now(UTC),
        settle=timedelta(seconds=settings.settle_s),
    )
    return {
        "desired": run.sample.desired,
        "current": run.sample.current,
        "recorded": run.recorded,
        "windows_attributed": len(run.attributed),
    }
