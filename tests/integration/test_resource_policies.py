"""Resource policies in the local IAM check: the bucket policy, topic policies and queue
policies of template.yaml, combined with the caller's identity policy as AWS combines them
for a request within one account (an explicit Deny in either wins; an Allow in either
suffices)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from imagebatch_local.cloud.iam_enforcer import IamEnforcer, enforcing
from imagebatch_local.cloud.lambda_runtime import acting_as
from imagebatch_local.cloud.local_stack import LocalStack, create_stack
from imagebatch_local.cloud.session import LocalOptions, _iam_enforcer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(aws: None) -> LocalStack:
    return create_stack(REPO / "template.yaml", None)


@contextmanager
def _enforce(stack: LocalStack) -> Iterator[IamEnforcer]:
    """The enforcer `imagebatch local run` builds for this stack, hooked."""
    with enforcing(_iam_enforcer(stack, LocalOptions())) as iam:
        yield iam


def _bucket_statements(stack: LocalStack) -> list[Any]:
    statements: list[Any] = stack.resources["DataBucketPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    return statements


def test_a_deny_in_the_bucket_policy_refuses_what_the_role_allows(stack: LocalStack) -> None:
    # GenerateChunk's role allows s3:PutObject on outputs/*; the bucket policy denies a part.
    _bucket_statements(stack).append(
        {
            "Sid": "DenyForTheTest",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:PutObject",
            "Resource": {"Fn::Sub": "${DataBucket.Arn}/outputs/sealed/*"},
        }
    )
    bucket = stack.physical["DataBucket"]
    with _enforce(stack) as iam, acting_as("GenerateChunkFunction"):
        s3 = boto3.client("s3", region_name=stack.region)  # made after the hook: checked
        s3.put_object(Bucket=bucket, Key="outputs/open/x.png", Body=b"png")
        with pytest.raises(ClientError) as denied:
            s3.put_object(Bucket=bucket, Key="outputs/sealed/x.png", Body=b"png")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert denied.value.response["Error"]["Message"].endswith(
        f"s3:PutObject on resource: arn:aws:s3:::{bucket}/outputs/sealed/x.png "
        "with an explicit deny in a resource-based policy"
    )
    assert [(d.owner, d.action) for d in iam.denials] == [("GenerateChunkFunction", "s3:PutObject")]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="outputs/sealed/")
