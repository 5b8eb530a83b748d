"""`imagebatch doctor` against a stack in moto, with Bedrock and Service Quotas stubbed.

Where moto answers, it does: the stack (CloudFormation DescribeStacks: outputs and
parameters), the ECR image (DescribeImages) and the model archive (S3 HeadObject). moto
implements neither Bedrock's GetFoundationModelAvailability and
ListFoundationModelAgreementOffers nor Service Quotas' ListServiceQuotas (only a VPC table
of defaults), so those answers are recorded in botocore's own shapes with botocore's Stubber,
which validates each request and each response against the service model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from imagebatch_cli.app import app
from imagebatch_cli.commands import doctor as doctor_command
from imagebatch_cli.doctor_checks import (
    Check,
    image_check,
    instance_quota_check,
    invoke_quota_check,
    model_access_check,
)
from imagebatch_cli.exit_codes import ExitCode
from typer.testing import CliRunner

from imagebatch.aws.account_checks import (
    AccountProbe,
    ModelAccess,
    Quota,
    parse_ecr_image,
)
from imagebatch.aws.session import AwsSession
from imagebatch.models.bedrock_models import ModelSpec, load_catalogue

STACK = "imagebatch"
REGION = "us-west-2"
ACCOUNT = "123456789012"
BUCKET = f"imagebatch-{ACCOUNT}-{REGION}-imagebatch"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/imagebatch-serving:v1"
ARCHIVE = "models/model.tar.gz"
# The catalogue models served in us-west-2 and not retired (Titan v2 retired 2026-06-30).
MODELS = [
    "stability.sd3-5-large-v1:0",
    "stability.stable-image-core-v1:1",
    "stability.stable-image-ultra-v1:1",
]
runner = CliRunner()


def _spec(model_id: str) -> ModelSpec:
    spec = load_catalogue().get(model_id)
    assert spec is not None
    return spec


@pytest.fixture
def stack(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack in moto's CloudFormation with template.yaml's outputs and the parameters doctor
    reads, its endpoint image in ECR and its model archive in the data bucket."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    parameters = {
        "ChunkConcurrency": "50",
        "MapMaxConcurrency": "10",
        "EnableSageMaker": "true",
        "SageMakerInstanceType": "ml.inf2.xlarge",
        "SageMakerMaxInstances": "2",
        "SageMakerImageUri": IMAGE,
        "SageMakerModelBucket": "",
        "SageMakerModelDataKey": ARCHIVE,
    }
    template = {
        "Parameters": {key: {"Type": "String"} for key in parameters},
        "Resources": {
            "DataBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": BUCKET}},
        },
        "Outputs": {
            "DataBucketName": {"Value": {"Ref": "DataBucket"}},
            "LedgerTableName": {"Value": "imagebatch-ledger"},
            "QueryApiUrl": {"Value": "https://example.execute-api.us-west-2.amazonaws.com"},
        },
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="imagebatch-serving")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    }
    ecr.put_image(
        repositoryName="imagebatch-serving", imageManifest=json.dumps(manifest), imageTag="v1"
    )
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=ARCHIVE, Body=b"tar")


def _availability(
    model_id: str, agreement: str = "AVAILABLE", entitled: bool = True
) -> dict[str, Any]:
    return {
        "modelId": model_id,
        "agreementAvailability": {"status": agreement},
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "AVAILABLE" if entitled else "NOT_AVAILABLE",
        "regionAvailability": "AVAILABLE",
    }


def _quota(code: str, name: str, value: float, unit: str | None) -> dict[str, Any]:
    quota: dict[str, Any] = {
        "ServiceCode": code.split("-", maxsplit=1)[0],
        "QuotaCode": code,
        "QuotaName": name,
        "Value": value,
        "Adjustable": True,
        "GlobalQuota": False,
    }
    if unit:
        quota["Period"] = {"PeriodValue": 1, "PeriodUnit": unit}
    return quota


BEDROCK_QUOTAS = [
    _quota(
        f"bedrock-L-{i}",
        f"On-demand InvokeModel requests per minute for {_spec(m).name}",
        60.0,
        "MINUTE",
    )
    for i, m in enumerate(MODELS)
]
SAGEMAKER_QUOTAS = [_quota("sagemaker-L-1", "ml.inf2.xlarge for endpoint usage", 2.0, None)]


class Stubs:
    """Bedrock and Service Quotas clients whose answers the test records, in call order."""

    def __init__(self) -> None:
        self.bedrock = boto3.client("bedrock", region_name=REGION)
        self.quotas = boto3.client("service-quotas", region_name=REGION)
        self.bedrock_stub = Stubber(self.bedrock)
        self.quotas_stub = Stubber(self.quotas)

    def answer(self, unsubscribed: str | None = None) -> None:
        self.quotas_stub.add_response(
            "list_service_quotas", {"Quotas": BEDROCK_QUOTAS}, {"ServiceCode": "bedrock"}
        )
        for model_id in MODELS:
            if model_id == unsubscribed:
                self.bedrock_stub.add_response(
                    "get_foundation_model_availability",
                    _availability(model_id, "NOT_AVAILABLE", entitled=False),
                    {"modelId": model_id},
                )
                self.bedrock_stub.add_response(
                    "list_foundation_model_agreement_offers",
                    {
                        "modelId": model_id,
                        "offers": [
                            {
                                "offerToken": "offer-token-1",
                                "termDetails": {
                                    "usageBasedPricingTerm": {"rateCard": []},
                                    "legalTerm": {"url": "https://example.com/eula"},
                                    "supportTerm": {},
                                },
                            }
                        ],
                    },
                    {"modelId": model_id, "offerType": "PUBLIC"},
                )
            else:
                self.bedrock_stub.add_response(
                    "get_foundation_model_availability",
                    _availability(model_id),
                    {"modelId": model_id},
                )
        self.quotas_stub.add_response(
            "list_service_quotas", {"Quotas": SAGEMAKER_QUOTAS}, {"ServiceCode": "sagemaker"}
        )


@pytest.fixture
def stubs(stack: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubs]:
    stubs = Stubs()

    def probe(session: AwsSession) -> AccountProbe:
        return AccountProbe(stubs.bedrock, stubs.quotas, session.ecr(), session.s3())

    monkeypatch.setattr(doctor_command, "make_probe", probe)
    with stubs.bedrock_stub, stubs.quotas_stub:
        yield stubs
        stubs.bedrock_stub.assert_no_pending_responses()
        stubs.quotas_stub.assert_no_pending_responses()


def test_everything_in_place_passes_and_exits_0(stubs: Stubs) -> None:
    stubs.answer()
    result = runner.invoke(app, ["doctor", "--stack", STACK])
    assert result.exit_code == ExitCode.OK, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "10 passed, 0 warnings, 0 failed"
    assert all(line.startswith("PASS") for line in lines[:-1])
    assert f"PASS  endpoint image: {IMAGE} is in ECR" in lines
    assert f"PASS  model archive: s3://{BUCKET}/{ARCHIVE} exists" in lines


def test_a_model_not_yet_subscribed_prints_the_fix_and_exits_1(stubs: Stubs) -> None:
    stubs.answer(unsubscribed="stability.stable-image-ultra-v1:1")
    result = runner.invoke(app, ["doctor", "--stack", STACK])
    assert result.exit_code == ExitCode.ERROR, result.output
    assert (
        "FAIL  model access stability.stable-image-ultra-v1:1: the account has not subscribed "
        "to this model"
    ) in result.stdout
    assert (
        "fix: aws bedrock create-foundation-model-agreement --model-id "
        "stability.stable-image-ultra-v1:1 --offer-token offer-token-1 --region us-west-2"
    ) in result.stdout
    assert result.stdout.splitlines()[-1] == "9 passed, 0 warnings, 1 failed"


def test_json_lists_every_check(stubs: Stubs) -> None:
    stubs.answer(unsubscribed=MODELS[0])
    result = runner.invoke(app, ["doctor", "--stack", STACK, "--json"])
    assert result.exit_code == ExitCode.ERROR
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert [c["status"] for c in document["checks"]].count("fail") == 1
    assert set(document["checks"][0]) == {"name", "status", "detail", "fix"}


def test_a_missing_image_and_archive_fail(stubs: Stubs) -> None:
    boto3.client("ecr", region_name=REGION).batch_delete_image(
        repositoryName="imagebatch-serving", imageIds=[{"imageTag": "v1"}]
    )
    boto3.client("s3", region_name=REGION).delete_object(Bucket=BUCKET, Key=ARCHIVE)
    stubs.answer()
    result = runner.invoke(app, ["doctor", "--stack", STACK])
    assert result.exit_code == ExitCode.ERROR
    assert f"FAIL  endpoint image: ECR has no image {IMAGE}" in result.stdout
    assert f"FAIL  model archive: no s3://{BUCKET}/{ARCHIVE}" in result.stdout


def test_no_stack_is_one_failed_check(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    result = runner.invoke(app, ["doctor", "--stack", "nothing-here", "--region", REGION])
    assert result.exit_code == ExitCode.ERROR
    assert "FAIL  stack: no stack 'nothing-here' in us-west-2" in result.stdout


# -- the judgements ----------------------------------------------------------------------------


def test_a_quota_below_the_plan_fails_with_the_increase_to_ask_for() -> None:
    spec = _spec(MODELS[0])  # 60 images/min at 8 s: 6 calls in flight, 45 requests a minute
    low = [Quota(code="L-1", name=BEDROCK_QUOTAS[0]["QuotaName"], value=20, period="MINUTE")]
    check = invoke_quota_check(
        spec, low, {"ChunkConcurrency": "2", "MapMaxConcurrency": "2"}, REGION
    )
    # 2 x 2 = 4 calls in flight at 8 s an image: 30 a minute
    assert check.status == "fail"
    assert "quota 20/min is below what a batch sends up to 30 a minute" in check.detail
    assert check.fix is not None and "--quota-code L-1 --desired-value 30" in check.fix
    missing = invoke_quota_check(spec, [], {}, REGION)
    assert missing.status == "warn"


def test_instance_quota_zero_fails_and_below_max_warns() -> None:
    def quota(value: float) -> list[Quota]:
        return [Quota(code="L-9", name="ml.g5.xlarge for endpoint usage", value=value)]

    assert instance_quota_check("ml.g5.xlarge", quota(0), 2).status == "fail"
    assert instance_quota_check("ml.g5.xlarge", quota(1), 2).status == "warn"
    assert instance_quota_check("ml.g5.xlarge", quota(4), 2).status == "pass"


def test_an_image_in_another_region_or_registry() -> None:
    other = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/serving@sha256:{'a' * 64}"
    parsed = parse_ecr_image(other)
    assert parsed is not None and parsed.digest == f"sha256:{'a' * 64}" and parsed.tag is None
    assert image_check(other, parsed, True, REGION).status == "fail"
    assert image_check("unset", parse_ecr_image("unset"), None, REGION).status == "warn"


@pytest.mark.parametrize(
    ("access", "status"),
    [
        (ModelAccess(model_id="m", offered=False), "fail"),
        (
            ModelAccess(
                model_id="m", offered=True, region_available=True, authorized=False, entitled=True
            ),
            "fail",
        ),
        (
            ModelAccess(
                model_id="m",
                offered=True,
                region_available=True,
                authorized=True,
                agreement="PENDING",
            ),
            "warn",
        ),
    ],
)
def test_model_access_verdicts(access: ModelAccess, status: str) -> None:
    check: Check = model_access_check(_spec(MODELS[0]), access, REGION, None)
    assert check.status == status
