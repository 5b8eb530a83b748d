"""`imagebatch doctor`: an account and region checked before the first batch.

Reads the deployed stack (CloudFormation outputs and parameters), then asks AWS what a first
batch would otherwise find out by failing: each catalogue model the stack may call in its
region is offered and subscribed (Bedrock), its InvokeModel quota covers the stack's
concurrency (Service Quotas) and, with the SageMaker backend, the instance type's quota, the
ECR image and the model archive. Each check prints pass, or what to do; the AWS calls are
aws/account_checks.py's, the judgements doctor_checks.py's.

Exit 0 when nothing failed (warnings included), 1 when a check failed (exit_codes.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from imagebatch_cli.deployed_stack import StackOption, read_samconfig
from imagebatch_cli.exit_codes import ExitCode, fail

if TYPE_CHECKING:
    from imagebatch.aws.account_checks import AccountProbe
    from imagebatch.aws.deployed import StackOutputs
    from imagebatch.aws.session import AwsSession
    from imagebatch.models.bedrock_models import ModelSpec
    from imagebatch_cli.doctor_checks import Check

RegionOption = Annotated[
    str | None,
    typer.Option(
        help="The stack's region (default: --region, AWS_REGION, samconfig.toml's).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")]
# The parameters doctor reads; a stack deployed before one existed is told to redeploy.
READ_PARAMETERS = ("ChunkConcurrency", "MapMaxConcurrency", "EnableSageMaker")


def doctor(
    stack: StackOption = None, region: RegionOption = None, as_json: JsonOption = False
) -> None:
    """Check an AWS account and region before the first batch: the stack, each model's access
    and quota, and the SageMaker endpoint's quota, image and archive. Prints pass or the fix
    for each; exit 1 when one failed."""
    from imagebatch_cli.views.doctor import print_checks

    checks = run_checks(stack, region)
    print_checks(checks, as_json=as_json)
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(ExitCode.ERROR)


def make_probe(session: AwsSession) -> AccountProbe:
    """The account's clients in the stack's region (a test puts stubbed ones here)."""
    from imagebatch.aws.account_checks import AccountProbe

    return AccountProbe(session.bedrock(), session.service_quotas(), session.ecr(), session.s3())


def run_checks(stack: str | None, region: str | None) -> list[Check]:
    from imagebatch.aws.deployed import read_stack_outputs
    from imagebatch.errors import AwsAccessError, StackOutputsError
    from imagebatch_cli.doctor_checks import Check
    from imagebatch_cli.settings import aws_session

    config = read_samconfig()
    name = stack or config.stack_name
    if not name:
        fail("name a deployed stack: --stack NAME (or IMAGEBATCH_STACK, or samconfig.toml)")
    session = aws_session(region, default_region=config.region)
    try:
        outputs = read_stack_outputs(session.cloudformation(), name, session.region)
    except (StackOutputsError, AwsAccessError) as exc:
        return [
            Check(
                name="stack",
                status="fail",
                detail=str(exc),
                fix="deploy it (`sam deploy --guided`), or name it with --stack and --region",
            )
        ]
    probe = make_probe(session)
    return [
        _stack_check(outputs),
        *_model_checks(probe, outputs),
        *_endpoint_checks(probe, outputs),
    ]


def _stack_check(outputs: StackOutputs) -> Check:
    from imagebatch_cli.doctor_checks import Check

    read = ", ".join(f"{key}={outputs.parameters.get(key, '?')}" for key in READ_PARAMETERS)
    missing = [key for key in READ_PARAMETERS if key not in outputs.parameters]
    detail = (
        f"{outputs.stack_name} in {outputs.region}: bucket {outputs.data_bucket}, ledger "
        f"{outputs.ledger_table}; {read}"
    )
    if missing:
        return Check(
            name="stack",
            status="warn",
            detail=f"{detail}; deployed without {', '.join(missing)} (template defaults assumed)",
            fix="redeploy with this template (`sam deploy`)",
        )
    return Check(name="stack", status="pass", detail=detail)


def _models_for(region: str) -> list[ModelSpec]:
    """The catalogue models the stack may call: GenerateChunk's role allows every catalogue
    family, and ingest admits the models served in the stack's region and not retired."""
    from imagebatch.models.bedrock_models import load_catalogue

    today = datetime.now(UTC).date()
    return [
        spec
        for spec in load_catalogue().models
        if region in spec.availability.regions and not spec.is_retired(today)
    ]


def _model_checks(probe: AccountProbe, outputs: StackOutputs) -> list[Check]:
    from imagebatch.aws.account_checks import Quota
    from imagebatch.errors import AwsAccessError
    from imagebatch_cli.doctor_checks import Check, could_not_check, invoke_quota_check

    region = outputs.region
    models = _models_for(region)
    if not models:
        return [
            Check(
                name="models",
                status="fail",
                detail=f"no catalogue model is served in {region}",
                fix="deploy in a region that serves one (`imagebatch models`)",
            )
        ]
    checks: list[Check] = []
    quotas: list[Quota] | None = None
    try:
        quotas = probe.service_quotas("bedrock")
    except AwsAccessError as exc:
        checks.append(could_not_check("Bedrock quotas", str(exc)))
    for spec in models:
        checks.append(_access_check(probe, spec, region))
        if quotas is not None:
            checks.append(invoke_quota_check(spec, quotas, outputs.parameters, region))
    return checks


def _access_check(probe: AccountProbe, spec: ModelSpec, region: str) -> Check:
    from imagebatch.errors import AwsAccessError
    from imagebatch_cli.doctor_checks import could_not_check, model_access_check

    try:
        access = probe.model_access(spec.model_id)
    except AwsAccessError as exc:
        return could_not_check(f"model access {spec.model_id}", str(exc))
    offer = None
    if access.offered and not (access.agreement == "AVAILABLE" and access.entitled):
        try:
            offer = probe.offer_token(spec.model_id)
        except AwsAccessError:
            offer = None  # the fix then says where to find the token
    return model_access_check(spec, access, region, offer)


def _endpoint_checks(probe: AccountProbe, outputs: StackOutputs) -> list[Check]:
    from imagebatch.aws.account_checks import parse_ecr_image
    from imagebatch.errors import AwsAccessError
    from imagebatch_cli.doctor_checks import (
        DEFAULT_MAX_INSTANCES,
        archive_check,
        could_not_check,
        image_check,
        instance_quota_check,
    )

    parameters = outputs.parameters
    if parameters.get("EnableSageMaker") != "true":
        return []
    checks: list[Check] = []
    instance_type = parameters.get("SageMakerInstanceType", "ml.inf2.xlarge")
    max_instances = int(parameters.get("SageMakerMaxInstances", DEFAULT_MAX_INSTANCES))
    try:
        quotas = probe.service_quotas("sagemaker")
        checks.append(instance_quota_check(instance_type, quotas, max_instances))
    except AwsAccessError as exc:
        checks.append(could_not_check(f"SageMaker quota {instance_type}", str(exc)))
    uri = parameters.get("SageMakerImageUri", "unset")
    image = parse_ecr_image(uri)
    try:
        exists = probe.image_exists(image) if image is not None else None
        checks.append(image_check(uri, image, exists, outputs.region))
    except AwsAccessError as exc:
        checks.append(could_not_check("endpoint image", str(exc)))
    bucket = parameters.get("SageMakerModelBucket") or outputs.data_bucket
    key = parameters.get("SageMakerModelDataKey", "models/model.tar.gz")
    try:
        checks.append(archive_check(bucket, key, probe.object_exists(bucket, key)))
    except AwsAccessError as exc:
        checks.append(could_not_check("model archive", str(exc)))
    return checks
