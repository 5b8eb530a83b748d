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
from imagebatch_local.cloud.iam_policies import (
    Decision,
    PolicyError,
    Role,
    Statement,
    conditions_hold,
)
from imagebatch_local.cloud.iam_resource_policies import (
    Caller,
    ResourcePolicy,
    ResourceStatement,
    decide,
    resource_verdict,
)
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


# --- how the two kinds of policy combine ------------------------------------------------------

ACCOUNT = "123456789012"
BUCKET = "arn:aws:s3:::b"


def _policy(*statements: dict[str, Any]) -> ResourcePolicy:
    parsed = tuple(ResourceStatement.parse(s, i, "BucketPolicy") for i, s in enumerate(statements))
    return ResourcePolicy("BucketPolicy", "AWS::S3::BucketPolicy", (BUCKET, f"{BUCKET}/*"), parsed)


def _role(*statements: dict[str, Any]) -> Role:
    parsed = tuple(Statement.parse(s, i, "test") for i, s in enumerate(statements))
    return Role("Fn", "stack-FnRole", "stack-Fn", parsed)


def _decide(
    role: Role, policies: tuple[ResourcePolicy, ...], action: str, resource: str, context: Any
) -> Decision:
    return decide(role, action, resource, context, account=ACCOUNT, policies=policies)


def test_within_one_account_an_allow_in_either_policy_suffices_a_deny_in_either_wins() -> None:
    nothing = _role({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"})
    role_arn = nothing.principal_arn(ACCOUNT)
    allow_role = _policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": role_arn},
            "Action": "s3:GetObject",
            "Resource": f"{BUCKET}/*",
        }
    )
    assert _decide(nothing, (allow_role,), "s3:GetObject", f"{BUCKET}/k", {}).allowed
    assert not _decide(nothing, (allow_role,), "s3:PutObject", f"{BUCKET}/k", {}).allowed
    # Naming the account delegates to identity policies: its Allow alone grants nothing.
    allow_account = _policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "s3:GetObject",
            "Resource": f"{BUCKET}/*",
        }
    )
    assert not _decide(nothing, (allow_account,), "s3:GetObject", f"{BUCKET}/k", {}).allowed
    # A Deny unless the caller is one of the stack's roles: aws:PrincipalArn is the role's ARN.
    broad = _role({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"})
    writer = Role("Dev", "developers", "alice", broad.statements)
    seal = _policy(
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"{BUCKET}/chunks/*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [role_arn]}},
        }
    )
    denied = _decide(writer, (seal,), "s3:PutObject", f"{BUCKET}/chunks/x", {})
    assert not denied.allowed and denied.resource_deny
    assert _decide(writer, (seal,), "s3:PutObject", f"{BUCKET}/outputs/x", {}).allowed
    stack_role = Role("Fn", "stack-FnRole", "s", broad.statements)
    assert _decide(stack_role, (seal,), "s3:PutObject", f"{BUCKET}/chunks/x", {}).allowed
    # The TLS deny does not apply: the SDKs speak HTTPS to AWS.
    tls = _policy(
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:*",
            "Resource": f"{BUCKET}/*",
            "Condition": {"Bool": {"aws:SecureTransport": False}},
        }
    )
    assert _decide(writer, (tls,), "s3:PutObject", f"{BUCKET}/x", {}).allowed


def test_a_service_principal_needs_the_resource_policys_allow_and_its_source() -> None:
    queue = "arn:aws:sqs:us-east-1:123456789012:results"
    topic = "arn:aws:sns:us-east-1:123456789012:success"
    policy = ResourcePolicy(
        "QueuePolicy",
        "AWS::SQS::QueuePolicy",
        (queue,),
        tuple(
            ResourceStatement.parse(s, i, "QueuePolicy")
            for i, s in enumerate(
                [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sns.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": queue,
                        "Condition": {"ArnEquals": {"aws:SourceArn": [topic]}},
                    },
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "sqs:SendMessage",
                        "Resource": queue,
                        "Condition": {"ArnNotEquals": {"aws:SourceArn": [topic]}},
                    },
                ]
            )
        ),
    )
    sns = Caller(ACCOUNT, service="sns.amazonaws.com")
    ok = resource_verdict((policy,), sns, "sqs:SendMessage", queue, {"aws:SourceArn": topic})
    assert ok.allow and not ok.deny
    other = {"aws:SourceArn": topic.replace("success", "other")}
    assert resource_verdict((policy,), sns, "sqs:SendMessage", queue, other).deny
    # A role sending directly carries no aws:SourceArn: the negated operator holds, denied.
    sender = _role({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"})
    assert _decide(sender, (policy,), "sqs:SendMessage", queue, {}).resource_deny


def test_null_and_not_principal() -> None:
    assert conditions_hold({"Null": {"aws:SourceArn": "true"}}, {})
    assert not conditions_hold({"Null": {"aws:SourceArn": "true"}}, {"aws:SourceArn": "x"})
    assert conditions_hold({"Null": {"aws:SourceArn": False}}, {"aws:SourceArn": "x"})
    with pytest.raises(PolicyError, match="NotPrincipal"):
        ResourceStatement.parse(
            {"Effect": "Deny", "NotPrincipal": {"AWS": "x"}, "Action": "s3:*", "Resource": "*"},
            1,
            "t",
        )
