"""`imagebatch doctor`'s judgements: what AWS said about an account (aws.account_checks) and
what the stack was deployed with, turned into one Check each: pass, warn or fail, and the fix.

Pure functions, no AWS calls, so every wording is tested without an account. A fail is what
would make a batch fail or throttle by design; a warn is what doctor could not check, or what
only slows a batch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from imagebatch.backends.concurrency import sustainable_in_flight

if TYPE_CHECKING:
    from imagebatch.aws.account_checks import EcrImage, ModelAccess, Quota
    from imagebatch.models.bedrock_models import ModelSpec

Status = Literal["pass", "warn", "fail"]
# template.yaml's parameter defaults, for a stack deployed before a parameter existed
DEFAULT_CHUNK_CONCURRENCY = 50
DEFAULT_MAP_MAX_CONCURRENCY = 10
DEFAULT_MAX_INSTANCES = 2


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    status: Status
    detail: str
    fix: str | None = None


def model_access_check(
    spec: ModelSpec, access: ModelAccess, region: str, offer: str | None
) -> Check:
    """Offered here, and the account may call it: authorized, entitled, agreement accepted."""
    name = f"model access {spec.model_id}"
    if not access.offered or not access.region_available:
        return Check(
            name=name,
            status="fail",
            detail=f"Bedrock does not offer {spec.model_id} in {region}",
            fix="deploy the stack in a region that serves it "
            f"({', '.join(spec.availability.regions)}) or leave this model out of your manifests",
        )
    if not access.authorized:
        return Check(
            name=name,
            status="fail",
            detail="your account is not authorized for this model (an IAM or SCP deny)",
            fix="allow bedrock:InvokeModel on it for this account (ask your AWS administrator)",
        )
    if access.agreement == "PENDING":
        return Check(
            name=name,
            status="warn",
            detail="the model's agreement is being set up (AWS Marketplace)",
            fix="wait a few minutes, then run `imagebatch doctor` again",
        )
    if access.agreement == "AVAILABLE" and access.entitled:
        return Check(name=name, status="pass", detail="offered, authorized, subscribed")
    problem = access.agreement_error or (
        "the account has not subscribed to this model"
        if access.agreement == "NOT_AVAILABLE"
        else f"agreement {access.agreement}, entitlement missing"
    )
    token = offer or "<offer token from `aws bedrock list-foundation-model-agreement-offers`>"
    return Check(
        name=name,
        status="fail",
        detail=problem,
        fix=f"aws bedrock create-foundation-model-agreement --model-id {spec.model_id} "
        f"--offer-token {token} --region {region} (needs aws-marketplace:Subscribe), "
        "then wait about 2 minutes",
    )


def quota_name_matches(quota: Quota, spec: ModelSpec) -> bool:
    """Service Quotas names Bedrock's on-demand rate 'On-demand InvokeModel requests per minute
    for <model name>'; matched loosely, as the provider prefix varies."""
    name = quota.name.lower()
    return "invokemodel" in name and "per minute" in name and spec.name.lower() in name


def invoke_quota_check(
    spec: ModelSpec, quotas: list[Quota], parameters: dict[str, str], region: str
) -> Check:
    """The account's requests-per-minute quota against what a batch on this stack sends: ingest
    plans min(ChunkConcurrency x MapMaxConcurrency, the catalogue's sustainable calls in
    flight) calls at once, one per seconds_per_image each."""
    name = f"InvokeModel quota {spec.model_id}"
    chunk = int(parameters.get("ChunkConcurrency", DEFAULT_CHUNK_CONCURRENCY))
    fan_out = int(parameters.get("MapMaxConcurrency", DEFAULT_MAP_MAX_CONCURRENCY))
    in_flight = min(chunk * fan_out, sustainable_in_flight(spec.throughput))
    per_minute = math.ceil(in_flight * 60 / spec.throughput.seconds_per_image)
    found = [q for q in quotas if quota_name_matches(q, spec)]
    if not found:
        return Check(
            name=name,
            status="warn",
            detail=f"no Service Quotas entry for {spec.name} InvokeModel requests per minute",
            fix=f"check it in the Service Quotas console (Amazon Bedrock, {region}): a batch "
            f"sends up to {per_minute} a minute",
        )
    quota = min(found, key=lambda q: q.value)
    planned = (
        f"a batch sends up to {per_minute} a minute ({in_flight} calls in flight: "
        f"ChunkConcurrency x MapMaxConcurrency = {chunk} x {fan_out}, capped by the catalogue's "
        f"{spec.throughput.images_per_minute} images/min, {spec.throughput.seconds_per_image:g} s "
        "an image)"
    )
    if quota.value >= per_minute:
        return Check(name=name, status="pass", detail=f"quota {quota.value:g}/min; {planned}")
    return Check(
        name=name,
        status="fail",
        detail=f"quota {quota.value:g}/min is below what {planned}: batches will be throttled",
        fix=f"aws service-quotas request-service-quota-increase --service-code bedrock "
        f"--quota-code {quota.code} --desired-value {per_minute} --region {region}, or lower "
        f"the model's images_per_minute in src/imagebatch/data/bedrock_models.json to "
        f"{quota.value:g}",
    )


def instance_quota_check(instance_type: str, quotas: list[Quota], max_instances: int) -> Check:
    """SageMaker's '<instance type> for endpoint usage' against SageMakerMaxInstances."""
    name = f"SageMaker quota {instance_type}"
    wanted = f"{instance_type} for endpoint usage".lower()
    found = [q for q in quotas if q.name.lower() == wanted]
    if not found:
        return Check(
            name=name,
            status="warn",
            detail=f"no Service Quotas entry '{instance_type} for endpoint usage'",
            fix="check it in the Service Quotas console (Amazon SageMaker)",
        )
    quota = found[0]
    increase = (
        f"aws service-quotas request-service-quota-increase --service-code sagemaker "
        f"--quota-code {quota.code} --desired-value {max_instances}"
    )
    if quota.value >= max_instances:
        return Check(
            name=name,
            status="pass",
            detail=f"quota {quota.value:g} instances; SageMakerMaxInstances {max_instances}",
        )
    if quota.value < 1:
        return Check(
            name=name,
            status="fail",
            detail="quota 0: the endpoint cannot start a single instance",
            fix=increase,
        )
    return Check(
        name=name,
        status="warn",
        detail=f"quota {quota.value:g} instances, below SageMakerMaxInstances {max_instances}: "
        "scale-out stops there",
        fix=increase,
    )


def image_check(uri: str, image: EcrImage | None, exists: bool | None, region: str) -> Check:
    name = "endpoint image"
    if image is None:
        return Check(
            name=name,
            status="warn",
            detail=f"SageMakerImageUri {uri!r} is not an ECR image URI; doctor cannot check it",
            fix="SageMaker pulls from ECR: push the image from containers/ (make neuron-image)",
        )
    if image.region != region:
        return Check(
            name=name,
            status="fail",
            detail=f"{uri} is in {image.region}; the endpoint runs in {region}",
            fix=f"push the image to ECR in {region} and redeploy with that SageMakerImageUri",
        )
    if not exists:
        return Check(
            name=name,
            status="fail",
            detail=f"ECR has no image {uri}",
            fix="build and push it (containers/, make neuron-image), then run doctor again",
        )
    return Check(name=name, status="pass", detail=f"{uri} is in ECR")


def archive_check(bucket: str, key: str, exists: bool) -> Check:
    name = "model archive"
    if exists:
        return Check(name=name, status="pass", detail=f"s3://{bucket}/{key} exists")
    return Check(
        name=name,
        status="fail",
        detail=f"no s3://{bucket}/{key}",
        fix=f"`imagebatch endpoint compile` (docs/sagemaker.md) or aws s3 cp model.tar.gz "
        f"s3://{bucket}/{key}",
    )


def could_not_check(name: str, reason: str) -> Check:
    """A check whose AWS call was refused or failed: said, not fatal (it may be our caller's
    permissions, not the stack's)."""
    return Check(
        name=name,
        status="warn",
        detail=f"could not check: {reason}",
        fix="run doctor with credentials that may make this call, or check it by hand",
    )
