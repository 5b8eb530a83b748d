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
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.stepfunctions import StepFunctionsStarter
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
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


def _ingest(bucket: str, key: str, etag: str, clock: LambdaClock) -> IngestOutcome:
    settings = _settings()
    deployed = bool(settings.sagemaker_endpoint_name)
    # None where imagebatch has no prices: ingest refuses the batch with a message.
    prices = load_aws_prices().find(settings.aws_region)
    stack = StackOptions(
        chunk_size=settings.chunk_size,
        max_concurrency=settings.map_max_concurrency,
        max_chunk_concurrency=settings.chunk_concurrency,
        sagemaker_buckets=parse_buckets(settings.sagemaker_shape_buckets) if deployed else None,
        sagemaker_price=(
            prices.find_instance(settings.sagemaker_instance_type)
            if deployed and prices is not None
            else None
        ),
        prices=prices,
        region=settings.aws_region,
        shape=Shape(
            chunk_size=settings.chunk_size,
            map_concurrency=settings.map_max_concurrency,
            chunk_concurrency=settings.chunk_concurrency,
            chunk_memory_mb=settings.chunk_memory_mb,
        ),
        sagemaker_instance_types=settings.sagemaker_instances,
        sagemaker_endpoint=settings.sagemaker_endpoint_name,
        sagemaker_model=settings.sagemaker_model_id,
        sagemaker_path=SageMakerPath(max_batch=settings.sagemaker_max_batch),
    )
    ledger = Ledger(dynamodb_client(), settings.ledger_table)
    ports = IngestPorts(
        store=BatchStore(s3_client(), bucket),
        ledger=ledger,
        starter=StepFunctionsStarter(sfn_client(), settings.state_machine_arn),
        catalogue=load_catalogue(),
        clock=clock,
        throughput=(
            EndpointThroughput(ledger.client, ledger.table, ledger.meter) if deployed else None
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
        if key.endswith("/"):
            # A folder marker (the console's "Create folder"): no upload, nothing to refuse.
            logger.info("ignoring folder marker", extra={"key": key})
            continue
        outcome = _ingest(record.s3.bucket.name, key, s3_object.eTag or "", clock)
        metrics.add_metric(name=f"Batches{outcome.status.title()}", unit=MetricUnit.Count, value=1)
        outcomes.append(asdict(outcome))
    return {"batches": outcomes}
