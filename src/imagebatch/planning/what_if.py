"""The plan on a stack: what ingest does with a manifest there, short of uploading. Ingest
runs it on the deployed stack; `imagebatch validate` and `estimate` on the stack the template
would deploy, so they show what ingest would do."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.planning.plan import BatchPlan, plan_batch
from imagebatch.planning.pricing import EndpointSeconds, MeasuredThroughput
from imagebatch.planning.reuse import MadeImages
from imagebatch.planning.stack_options import DeployedOptions


def plan_for_stack(
    stream: BinaryIO,
    key: str,
    *,
    batch_id: str,
    catalogue: ModelCatalogue,
    stack: DeployedOptions,
    spool: Path,
    at_zero: bool | None = None,
    throughput: MeasuredThroughput | None = None,
    made: MadeImages | None = None,
) -> BatchPlan:
    """Every line checked and routed, the backend chosen, chunk files spooled (the estimate
    and the decision are verdict.assess's).
    `at_zero`: whether the endpoint has no instance up (None: assume it has none);
    `throughput`: the endpoint's measured speeds (None: the data file's reference figures);
    `made`: the stack's image index (None: reuse unknown; not asked when the stack's
    ReuseImages is off, since its chunks will make every image)."""
    deployment = stack.deployment
    if deployment is not None and at_zero is not None:
        deployment = replace(deployment, at_zero=at_zero)
    return plan_batch(
        stream,
        key,
        batch_id=batch_id,
        catalogue=catalogue,
        chunk_size=stack.chunk_size,
        spool=spool,
        deployment=deployment,
        endpoint_seconds=(
            EndpointSeconds(
                throughput,
                deployment.endpoint_name,
                deployment.instance_type,
                deployment.model_id,
            )
            if throughput is not None and deployment is not None
            else None
        ),
        prices=stack.prices,
        shape=stack.shape,
        region=stack.region,
        made=made if stack.reuse_images else None,
        limits=stack.limits,
    )
