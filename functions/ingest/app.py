"""S3 ObjectCreated under manifests/ -> validate, chunk, record the batch, start its execution."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagebatch import wiring
from imagebatch.costs.usage import LambdaClock
from imagebatch.observability import logger, metrics, tracer
from imagebatch.pipeline.ingest import IngestOutcome, IngestPorts, ManifestObject, ingest_manifest
from imagebatch.planning.stack_options import DeployedOptions
from imagebatch.settings import IngestSettings, cached_settings

_settings = cached_settings(IngestSettings)


def _ingest(upload: ManifestObject, clock: LambdaClock) -> IngestOutcome:
    settings = _settings()
    stack = DeployedOptions.from_settings(settings)
    deployment = stack.deployment
    ledger = wiring.ledger(settings)
    usage = wiring.endpoint_usage(ledger)
    ports = IngestPorts(
        store=wiring.store(settings, upload.bucket),
        ledger=ledger,
        starter=wiring.starter(settings),
        catalogue=wiring.catalogue(),
        clock=clock,
        throughput=wiring.endpoint_throughput(ledger) if deployment else None,
        endpoint_at_zero=(
            (lambda: usage.at_zero(deployment.endpoint_name)) if deployment else None
        ),
    )
    return ingest_manifest(upload, ports, stack)


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
        # The version the event is about: the key may have been overwritten since.
        upload = ManifestObject(
            record.s3.bucket.name, key, s3_object.eTag or "", s3_object.versionId or None
        )
        outcome = _ingest(upload, clock)
        metrics.add_metric(name=f"Batches{outcome.status.title()}", unit=MetricUnit.Count, value=1)
        outcomes.append(outcome.output())
    return {"batches": outcomes}
