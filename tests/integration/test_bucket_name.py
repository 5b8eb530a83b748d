"""The data bucket's name must be a valid S3 bucket name for any stack name, in any region.

A CloudFormation stack name is 1-128 characters of [A-Za-z0-9-] starting with a letter; an S3
general purpose bucket name is 3-63 characters of lower-case letters, digits, dots and hyphens,
starting and ending with a letter or digit, not shaped like an IP address, without reserved
prefixes or suffixes (Amazon S3 User Guide, "General purpose bucket naming rules"). A name built
from the stack name failed the deploy for "MyStack" or any name past ~29 characters.

The name is resolved the way the local stack resolves the template
(imagebatch_local/template.py), with the pseudo parameters a real deployment would have.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.local_stack import LocalStack
from imagebatch_local.template import ACCOUNT_ID, load_template

# an ECR image URI: the template reads the repository of its ECR grant from it
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imagebatch:1"

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
LONGEST_REGION = "ap-southeast-7"

STACK_NAMES = [
    "imagebatch",
    "MyStack",
    "ImageBatch-Prod",
    "a",
    "x" * 128,
    "Team-A-imagebatch-production-eu-2026-11-with-a-long-suffix",
    "A" + "-b" * 63,
]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", LONGEST_REGION, "us-gov-west-1"]


class _DeployedStack(LocalStack):
    """Pseudo parameters of a stack deployed in `region` with a CloudFormation stack id."""

    region: str = "us-west-2"
    stack_id: str = ""

    def pseudo(self, name: str) -> str:
        values = {
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": self.region,
            "AWS::StackName": self.name,
            "AWS::StackId": self.stack_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        return values[name]


def _stack(name: str, region: str, stack_uuid: uuid.UUID) -> _DeployedStack:
    stack = _DeployedStack(name, TEMPLATE_PATH.parent, load_template(TEMPLATE_PATH))
    stack.region = region
    stack.stack_id = f"arn:aws:cloudformation:{region}:{ACCOUNT_ID}:stack/{name}/{stack_uuid}"
    stack.parameter_defaults({"EnableSageMaker": "true", "SageMakerImageUri": IMAGE})
    return stack


def bucket_name(name: str, region: str, stack_uuid: uuid.UUID) -> str:
    stack = _stack(name, region, stack_uuid)
    props = stack.template["Resources"]["DataBucket"]["Properties"]
    return str(stack.resolve(props["BucketName"]))


def naming_errors(name: str) -> list[str]:
    """Why `name` is not a valid S3 general purpose bucket name (empty: it is)."""
    errors = []
    if not 3 <= len(name) <= 63:
        errors.append(f"{len(name)} characters, not 3-63")
    if not re.fullmatch(r"[a-z0-9.-]+", name):
        errors.append("characters other than a-z 0-9 . -")
    if not (name[:1].isalnum() and name[-1:].isalnum()):
        errors.append("does not start and end with a letter or digit")
    if ".." in name:
        errors.append("two adjacent periods")
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        errors.append("formatted as an IP address")
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        errors.append("reserved prefix")
    if name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")):
        errors.append("reserved suffix")
    return errors


def test_the_rules_reject_what_s3_rejects() -> None:
    # Guards the checker the tests below rely on.
    assert naming_errors("imagebatch-123456789012-us-east-1-data") == []
    assert naming_errors("imagebatch-123456789012-us-east-1-MyStack")
    assert naming_errors("b" * 64) and naming_errors("ab") and naming_errors("-ab")


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("stack_name", STACK_NAMES)
def test_the_bucket_name_is_valid_for_any_stack_name(stack_name: str, region: str) -> None:
    name = bucket_name(stack_name, region, uuid.uuid1())
    assert naming_errors(name) == [], f"stack {stack_name!r} in {region}: {name!r}"


def test_the_name_is_stable_for_a_stack_and_differs_between_stacks() -> None:
    first, second = uuid.uuid1(), uuid.uuid1()
    # An update keeps the stack id, so the bucket keeps its name (no replacement)...
    assert bucket_name("imagebatch", "us-west-2", first) == bucket_name(
        "imagebatch", "us-west-2", first
    )
    # ...and a second stack of the same name (deleted and created again, or in another
    # region of the account) gets its own bucket.
    assert bucket_name("imagebatch", "us-west-2", first) != bucket_name(
        "imagebatch", "us-west-2", second
    )
    assert bucket_name("imagebatch", "us-west-2", first) != bucket_name(
        "imagebatch", "eu-west-1", second
    )


def _physical_names(stack: _DeployedStack, bucket: str) -> None:
    for logical_id in stack.resources:
        physical = bucket if logical_id == "DataBucket" else f"x-{logical_id}"
        stack.physical[logical_id] = physical
        stack.arns[logical_id] = (
            f"arn:aws:s3:::{bucket}" if logical_id == "DataBucket" else f"arn:x:{logical_id}"
        )
        for attribute in ("QueueName", "TopicName", "EndpointName", "ModelName"):
            stack.attributes[(logical_id, attribute)] = physical
    stack.attributes[("SageMakerEndpointConfig", "EndpointConfigName")] = "x"
    # the roles SAM generates for functions (<LogicalId>Role: the event bus's policy names one)
    for logical_id, resource in stack.resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            stack.arns[f"{logical_id}Role"] = f"arn:x:{logical_id}Role"


def test_every_reference_to_the_bucket_names_the_same_bucket() -> None:
    # GIVEN a stack with a capitalised name
    stack_uuid = uuid.uuid1()
    bucket = bucket_name("ImageBatch-Prod", "eu-west-1", stack_uuid)
    stack = _stack("ImageBatch-Prod", "eu-west-1", stack_uuid)
    _physical_names(stack, bucket)

    # WHEN the template is resolved
    resolved: Any = stack.resolve(
        {"Globals": stack.template["Globals"], "Resources": stack.resources}
    )
    text = json.dumps(resolved)

    # THEN every S3 ARN, s3:// URL and the functions' DATA_BUCKET name that one bucket
    named = set(re.findall(r"arn:aws:s3:::([^/\"]+)", text))
    named |= set(re.findall(r"s3://([^/\"]+)", text))
    assert named == {bucket}
    assert resolved["Globals"]["Function"]["Environment"]["Variables"]["DATA_BUCKET"] == bucket


def test_ingest_never_refers_to_the_bucket_resource() -> None:
    # The bucket's notification depends on IngestFunction (SAM adds the Lambda permission as a
    # DependsOn of the bucket): a !Ref or !GetAtt of DataBucket in the function, its policy or
    # the Globals it inherits is a CloudFormation cycle (cfn-lint E3004 on the transformed
    # template, `make check-template`).
    # (The S3 event itself names the bucket: that is the notification.)
    template = load_template(TEMPLATE_PATH)
    ingest = dict(template["Resources"]["IngestFunction"]["Properties"])
    ingest.pop("Events")
    for where in (ingest, template["Globals"]):
        assert "DataBucket" not in json.dumps(where)
