"""The SageMaker path's pricing inputs, from a function's settings (one place for both the
submit and the result function)."""

from __future__ import annotations

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.pipeline.sagemaker_chunk import EndpointCosting
from imagebatch.settings import SageMakerSettings


def endpoint_costing(
    settings: SageMakerSettings,
    ledger: Ledger,
    *,
    submit_memory_mb: int = 512,
) -> EndpointCosting:
    """The endpoint's pricing; its throughput reads and writes count on `ledger`'s meter."""
    prices = load_aws_prices().region(settings.aws_region)
    return EndpointCosting(
        endpoint_name=settings.endpoint_name,
        price=prices.instance(settings.instance_type),
        prices=prices,
        path=SageMakerPath(
            submit_memory_mb=submit_memory_mb,
            record_memory_mb=settings.record_memory_mb,
            record_timeout_s=settings.record_timeout_s,
            max_batch=settings.max_batch,
            hold_factor=settings.hold_factor,
        ),
        throughput=EndpointThroughput(ledger.client, ledger.table, ledger.meter),
        model=settings.model_id,
    )
