"""Bedrock spend tagged per stack: an application inference profile per stack and Stability
model, tagged with the stack and its team, invoked as the modelId and granted in IAM; the
local AWS records the profiles (moto has no Bedrock control plane) and the local Bedrock
accepts their ARNs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from imagebatch_local.cloud.iam_requests import IamRequest, Where, requests_for
from imagebatch_local.cloud.local_stack import LocalStack
from imagebatch_local.fakes.bedrock_server import LocalBedrock
from imagebatch_local.fakes.renderers import NullRenderer
from imagebatch_local.template import load_template

from imagebatch.aws.bedrock_runtime import BedrockImageBackend
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ImageJob
from imagebatch.settings import GenerateSettings

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PROFILES = {
    "Sd35LargeProfile": "stability.sd3-5-large-v1:0",
    "StableImageCoreProfile": "stability.stable-image-core-v1:1",
    "StableImageUltraProfile": "stability.stable-image-ultra-v1:1",
}
ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def test_one_tagged_profile_per_stability_model(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    profiles = {
        k: v
        for k, v in resources.items()
        if v["Type"] == "AWS::Bedrock::ApplicationInferenceProfile"
    }
    assert set(profiles) == set(PROFILES)
    for logical_id, profile in profiles.items():
        assert profile["Condition"] == "StabilityProfiles"
        props = profile["Properties"]
        assert props["ModelSource"]["CopyFrom"]["Fn::Sub"].endswith(
            f"foundation-model/{PROFILES[logical_id]}"
        )
        tags = {t["Key"]: t["Value"] for t in props["Tags"]}
        assert tags == {
            "imagebatch:stack": {"Ref": "AWS::StackName"},
            "imagebatch:team": {"Ref": "CostTeam"},
        }


def _stack(region: str, **parameters: str) -> LocalStack:
    stack = LocalStack("cost-split", TEMPLATE.parent, load_template(TEMPLATE), region)
    stack.parameter_defaults(parameters)
    stack.arns["DataBucket"] = "arn:aws:s3:::bucket"
    stack.arns["LedgerTable"] = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/ledger"
    stack.physical["LedgerTable"] = "ledger"
    for logical_id in PROFILES:
        profile_id = logical_id.lower()[:12]
        arn = f"arn:aws:bedrock:{region}:{ACCOUNT}:application-inference-profile/{profile_id}"
        stack.attributes[(logical_id, "InferenceProfileArn")] = arn
    return stack


def test_generate_chunk_invokes_through_the_profiles_and_may(template: dict[str, Any]) -> None:
    stack = _stack("us-west-2")
    function = template["Resources"]["GenerateChunkFunction"]["Properties"]
    variables = stack.resolve(function["Environment"]["Variables"])
    settings = GenerateSettings.model_validate(
        {**variables, "DATA_BUCKET": "bucket", "LEDGER_TABLE": "ledger", "AWS_REGION": "us-west-2"}
    )
    arns = settings.inference_profile_arns
    assert set(arns) == set(PROFILES.values())
    statements = stack.resolve(function["Policies"][0]["Statement"])
    invoke = [s for s in statements if s["Action"] == "bedrock:InvokeModel"]
    granted = {r for s in invoke for r in s["Resource"]}
    assert set(arns.values()) <= granted
    # the foundation models the profiles copy stay granted (AWS checks both), each by its ARN
    for model_id in arns:
        assert f"arn:aws:bedrock:us-west-2::foundation-model/{model_id}" in granted


def test_where_the_models_are_not_served_or_profiles_are_off_the_bare_ids_are_used(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["GenerateChunkFunction"]["Properties"]
    for stack in (_stack("us-east-1"), _stack("us-west-2", BedrockInferenceProfiles="false")):
        assert not stack.condition("StabilityProfiles")
        variables = stack.resolve(function["Environment"]["Variables"])
        assert variables["BEDROCK_INFERENCE_PROFILES"] == ""
        assert not any(
            v["Type"] == "AWS::Bedrock::ApplicationInferenceProfile"
            for v in stack.resources.values()
        )


def test_the_local_bedrock_answers_a_profile_arn_as_its_model() -> None:
    model = "stability.sd3-5-large-v1:0"
    arn = f"arn:aws:bedrock:us-west-2:{ACCOUNT}:application-inference-profile/abc123def456"
    job = ImageJob(
        image_id="a-1",
        item_id="a",
        index=1,
        line=1,
        prompt="p",
        width=1024,
        height=1024,
        seed=3,
        model=model,
    )
    with LocalBedrock(NullRenderer()) as bedrock:
        bedrock.add_inference_profiles({arn: model})
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-west-2",
            endpoint_url=bedrock.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        image = BedrockImageBackend(client, load_catalogue(), {model: arn}).generate(job)
        assert image.seed == 3 and bedrock.stats.images_returned == 1


def test_the_local_iam_check_asks_for_the_profile_and_its_model() -> None:
    arn = f"arn:aws:bedrock:us-west-2:{ACCOUNT}:application-inference-profile/abc123def456"
    where = Where("us-west-2", ACCOUNT, (), ((arn, "stability.sd3-5-large-v1:0"),))
    assert requests_for("bedrock-runtime", "InvokeModel", {"modelId": arn}, where) == [
        IamRequest(
            "bedrock:InvokeModel",
            "arn:aws:bedrock:us-west-2::foundation-model/stability.sd3-5-large-v1:0",
        ),
        IamRequest("bedrock:InvokeModel", arn),
    ]
