"""S3 ObjectCreated under manifests/ -> validate, chunk, record the batch, start its execution."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch.aws.clients import dynamodb_client, s3_client, sfn_client
from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.stepfunctions import StepFunctionsStarter
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.backends.routing import Deployment
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import RegionPrices, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.sagemaker_contract import parse_buckets
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.ingest import (
    IngestOutcome,
    IngestPorts,
    ManifestObject,
    StackOptions,
    ingest_manifest,
)
from imagebatch.settings import IngestSettings, cached_settings

_settings = cached_settings(IngestSettings)


def _deployment(settings: IngestSettings, prices: RegionPrices) -> Deployment | None:
    """What the stack deployed on the SageMaker side, from its template parameters."""
    if not settings.sagemaker_endpoint_name:
        return None
    return Deployment(
        endpoint_name=settings.sagemaker_endpoint_name,
        price=prices.instance(settings.sagemaker_instance_type),
        model_id=settings.sagemaker_model_id,
        buckets=parse_buckets(settings.sagemaker_shape_buckets),
        stands_in_for=settings.sagemaker_stands_in_for,
        path=SageMakerPath(max_batch=settings.sagemaker_max_batch),
    )


def _ingest(bucket: str, key: str, etag: str, clock: LambdaClock) -> IngestOutcome:
    settings = _settings()
    prices = load_aws_prices().region(settings.aws_region)
    deployment = _deployment(settings, prices)
    stack = StackOptions(
        chunk_size=settings.chunk_size,
        max_concurrency=settings.map_max_concurrency,
        max_chunk_concurrency=settings.chunk_concurrency,
        prices=prices,
        shape=Shape(
            chunk_size=settings.chunk_size,
            map_concurrency=settings.map_max_concurrency,
            chunk_concurrency=settings.chunk_concurrency,
            chunk_memory_mb=settings.chunk_memory_mb,
        ),
        deployment=deployment,
    )
    ledger = Ledger(dynamodb_client(), settings.ledger_table)
    usage = EndpointUsageStore(ledger.client, ledger.table, ledger.meter)
    ports = IngestPorts(
        store=BatchStore(s3_client(), bucket),
        ledger=ledger,
        starter=StepFunctionsStarter(sfn_client(), settings.state_machine_arn),
        catalogue=load_catalogue(),
        clock=clock,
        throughput=(
            EndpointThroughput(ledger.client, ledger.table, ledger.meter) if deployment else None
        ),
        endpoint_at_zero=(
            (lambda: usage.at_zero(deployment.endpoint_name)) if deployment else None
        ),
    )
    return ingest_manifest(ManifestObject(bucket, key, etag), ports, stack)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clock = LambdaClock(int(context.memory_limit_in_mb))
    if "Records" not in event:
        # S3 sends one s3:TestEvent when the notification is configured.
        logger.info("ignoring event without records", extra={"event": event.get("Event")})
        return {"batches": []}
    outcomes = []
    for record in parse(event=event, model=S3Model).Records:
        s3_object = record.s3.object
        if s3_object is None:
            continue
        # S3 URL-encodes keys in events ('a b.jsonl' arrives as 'a+b.jsonl').
        key = unquote_plus(s3_object.key)
        outcome = _ingest(record.s3.bucket.name, key, s3_object.eTag or "", clock)
        metrics.add_metric(name=f"Batches{outcome.status.title()}", unit=MetricUnit.Count, value=1)
        outcomes.append(asdict(outcome))
    return {"batches": outcomes}
