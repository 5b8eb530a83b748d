"""The local IAM check: policy evaluation, the call-to-action mapping, and the hook that
fails a call as AWS would (tools/imagebatch_local/cloud/iam_*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from imagebatch_local.cloud.iam_enforcer import IamEnforcer, enforcing
from imagebatch_local.cloud.iam_policies import (
    PolicyError,
    Role,
    Statement,
    conditions_hold,
    stack_roles,
)
from imagebatch_local.cloud.iam_requests import (
    LOCAL_MAP_RUN_LABEL,
    IamRequest,
    Where,
    requests_for,
)
from imagebatch_local.cloud.lambda_runtime import acting_as
from imagebatch_local.cloud.local_stack import LocalStack, create_stack
from imagebatch_local.template import ACCOUNT_ID

REPO = Path(__file__).resolve().parents[2]
WHERE = Where("us-east-1", ACCOUNT_ID, ("arn:aws:states:us-east-1:123456789012:stateMachine:sm",))


def _role(*statements: dict[str, Any]) -> Role:
    parsed = tuple(Statement.parse(s, i, "test") for i, s in enumerate(statements))
    return Role("Fn", "stack-FnRole", "stack-Fn", parsed)


# --- evaluation ---------------------------------------------------------------------------


def test_wildcards_follow_iam_actions_ignore_case_resources_do_not() -> None:
    role = _role(
        {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/chunks/*"},
        {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": "arn:aws:dynamodb:*:?:t/x"},
    )
    assert role.decide("s3:getobject", "arn:aws:s3:::b/chunks/a/b.json", {}).allowed
    assert not role.decide("s3:GetObject", "arn:aws:s3:::b/outputs/a.png", {}).allowed
    assert not role.decide("s3:GetObject", "arn:aws:s3:::B/chunks/a", {}).allowed
    assert not role.decide("s3:PutObject", "arn:aws:s3:::b/chunks/a", {}).allowed
    assert role.decide("dynamodb:Query", "arn:aws:dynamodb:us-east-1:1:t/x", {}).allowed
    assert not role.decide("dynamodb:Query", "arn:aws:dynamodb:us-east-1:12:t/x", {}).allowed


def test_an_explicit_deny_wins_and_not_action_not_resource_invert() -> None:
    role = _role(
        {"Effect": "Allow", "NotAction": "s3:DeleteObject", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "NotResource": "arn:aws:s3:::b/ok/*"},
    )
    assert role.decide("s3:GetObject", "arn:aws:s3:::b/x", {}).allowed
    assert not role.decide("s3:DeleteObject", "arn:aws:s3:::b/x", {}).allowed
    denied = role.decide("s3:PutObject", "arn:aws:s3:::b/x", {})
    assert not denied.allowed and denied.explicit_deny
    assert role.decide("s3:PutObject", "arn:aws:s3:::b/ok/x", {}).allowed


def test_conditions_hold_as_iam_evaluates_them() -> None:
    prefix = {"StringLike": {"s3:prefix": "catalogs/*"}}
    assert conditions_hold(prefix, {"s3:prefix": "catalogs/"})
    assert not conditions_hold(prefix, {"s3:prefix": "manifests/"})
    # A key the request lacks: a positive operator fails, a negated one or ...IfExists holds.
    assert not conditions_hold(prefix, {})
    assert conditions_hold({"StringNotEquals": {"s3:prefix": "x"}}, {})
    assert conditions_hold({"StringLikeIfExists": {"s3:prefix": "x*"}}, {})
    assert conditions_hold({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "true"})
    with pytest.raises(PolicyError, match="NumericLessThan"):
        conditions_hold({"NumericLessThan": {"s3:max-keys": "10"}}, {"s3:max-keys": "5"})


def test_a_statement_the_check_cannot_read_is_refused() -> None:
    with pytest.raises(PolicyError, match="Effect"):
        Statement.parse({"Effect": "allow", "Action": "s3:GetObject", "Resource": "*"}, 1, "t")
    with pytest.raises(PolicyError, match="unresolved"):
        Statement.parse({"Effect": "Allow", "Action": "s3:*", "Resource": "${x}"}, 1, "t")


def test_a_role_without_an_action_keeps_the_rest() -> None:
    role = _role({"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "*"})
    less = role.without("s3:PutObject")
    assert less.decide("s3:GetObject", "arn:aws:s3:::b/k", {}).allowed
    assert not less.decide("s3:PutObject", "arn:aws:s3:::b/k", {}).allowed


# --- which action, which resource ----------------------------------------------------------


def _actions(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r.action, r.resource) for r in requests_for(service, operation, params, WHERE)]


def test_s3_calls_map_to_the_reference_actions() -> None:
    obj = {"Bucket": "b", "Key": "k/1.png"}
    assert _actions("s3", "HeadObject", obj) == [("s3:GetObject", "arn:aws:s3:::b/k/1.png")]
    assert _actions("s3", "GetObject", {**obj, "VersionId": "v"})[0][0] == "s3:GetObjectVersion"
    assert _actions("s3", "CompleteMultipartUpload", obj) == [
        ("s3:PutObject", "arn:aws:s3:::b/k/1.png")
    ]
    copy = _actions("s3", "CopyObject", {**obj, "CopySource": {"Bucket": "b", "Key": "src"}})
    assert copy == [("s3:GetObject", "arn:aws:s3:::b/src"), ("s3:PutObject", obj_arn(obj))]
    listing = requests_for("s3", "ListObjectsV2", {"Bucket": "b", "Prefix": "catalogs/"}, WHERE)
    assert listing == [IamRequest("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "catalogs/"})]


def obj_arn(params: dict[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def test_dynamodb_transactions_need_each_items_action_and_indexes_their_arn() -> None:
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/t"
    items = [
        {"ConditionCheck": {"TableName": "t"}},
        {"Put": {"TableName": "t"}},
        {"Update": {"TableName": "t"}},
    ]
    assert _actions("dynamodb", "TransactWriteItems", {"TransactItems": items}) == [
        ("dynamodb:ConditionCheckItem", table),
        ("dynamodb:PutItem", table),
        ("dynamodb:UpdateItem", table),
    ]
    query = {"TableName": "t", "IndexName": "gsi1"}
    assert _actions("dynamodb", "Query", query) == [("dynamodb:Query", f"{table}/index/gsi1")]
    assert _actions("dynamodb", "BatchGetItem", {"RequestItems": {"t": {}}}) == [
        ("dynamodb:BatchGetItem", table)
    ]


def test_other_services_map_to_their_resource_arns() -> None:
    assert _actions("lambda", "Invoke", {"FunctionName": "fn", "Qualifier": "live"}) == [
        ("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:fn:live")
    ]
    assert _actions(
        "bedrock-runtime", "InvokeModel", {"modelId": "stability.sd3-5-large-v1:0"}
    ) == [
        (
            "bedrock:InvokeModel",
            "arn:aws:bedrock:us-east-1::foundation-model/stability.sd3-5-large-v1:0",
        )
    ]
    assert _actions("sagemaker-runtime", "InvokeEndpointAsync", {"EndpointName": "My-Images"}) == [
        (
            "sagemaker:InvokeEndpointAsync",
            "arn:aws:sagemaker:us-east-1:123456789012:endpoint/my-images",
        )
    ]
    # A task token names no resource: it is authorized on the state machine that issued it,
    # and on the Map Run's child state machine whose execution holds it.
    assert _actions("stepfunctions", "SendTaskSuccess", {"taskToken": "t", "output": "{}"}) == [
        ("states:SendTaskSuccess", WHERE.state_machines[0]),
        ("states:SendTaskSuccess", f"{WHERE.state_machines[0]}/{LOCAL_MAP_RUN_LABEL}"),
    ]
    url = "http://127.0.0.1:5000/123456789012/q"
    assert _actions("sqs", "DeleteMessageBatch", {"QueueUrl": url, "Entries": []}) == [
        ("sqs:DeleteMessage", "arn:aws:sqs:us-east-1:123456789012:q")
    ]


def test_a_call_without_a_mapping_is_refused_not_passed() -> None:
    with pytest.raises(PolicyError, match=r"s3\.PutBucketPolicy"):
        requests_for("s3", "PutBucketPolicy", {"Bucket": "b"}, WHERE)
    with pytest.raises(PolicyError, match="kms"):
        requests_for("kms", "Decrypt", {}, WHERE)


# --- the template's roles, enforced on real calls -------------------------------------------


@pytest.fixture
def stack(aws: None) -> LocalStack:
    return create_stack(REPO / "template.yaml", None)


@pytest.fixture
def enforcer(stack: LocalStack) -> Iterator[IamEnforcer]:
    machines = tuple(stack.arns[m] for m in stack.of_type("AWS::Serverless::StateMachine"))
    iam = IamEnforcer(
        stack_roles(stack), Where(stack.region, ACCOUNT_ID, machines), "BatchStateMachine"
    )
    with enforcing(iam):
        yield iam


def test_a_function_may_do_what_its_role_allows_and_nothing_else(
    stack: LocalStack, enforcer: IamEnforcer
) -> None:
    bucket = stack.physical["DataBucket"]
    s3 = boto3.client("s3", region_name="us-east-1")
    with acting_as("GenerateChunkFunction"):
        s3.put_object(Bucket=bucket, Key="outputs/b/x.png", Body=b"png")
        with pytest.raises(ClientError) as denied:
            s3.put_object(Bucket=bucket, Key="reports/b/summary.json", Body=b"{}")
    error = denied.value.response["Error"]
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Code"] == "AccessDenied"
    assert error["Message"] == (
        "User: arn:aws:sts::123456789012:assumed-role/imagebatch-local-GenerateChunkFunctionRole/"
        "imagebatch-local-GenerateChunkFunction is not authorized to perform: s3:PutObject on "
        f"resource: arn:aws:s3:::{bucket}/reports/b/summary.json because no identity-based policy "
        "allows the s3:PutObject action"
    )
    assert [(d.owner, d.action) for d in enforcer.denials] == [
        ("GenerateChunkFunction", "s3:PutObject")
    ]
    # The operator (no identity) is not checked: the object was never written.
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="reports/")


def test_a_missing_key_is_403_without_list_bucket_and_404_with_it(
    stack: LocalStack, enforcer: IamEnforcer
) -> None:
    bucket = stack.physical["DataBucket"]
    s3 = boto3.client("s3", region_name="us-east-1")
    with acting_as("GenerateChunkFunction"), pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="chunks/b/00000.pending.json")
    with acting_as("ContactSheetFunction"), pytest.raises(ClientError) as denied:
        s3.get_object(Bucket=bucket, Key="chunks/b/00000.json")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert [(d.owner, d.action) for d in enforcer.denials] == [
        ("ContactSheetFunction", "s3:ListBucket")
    ]


def test_a_listing_outside_the_functions_prefixes_is_denied(
    stack: LocalStack, enforcer: IamEnforcer
) -> None:
    # ListObjectsV2 is s3:ListBucket with the request's Prefix as s3:prefix: a function may
    # list only under the prefixes its grant names, as AWS evaluates the condition.
    bucket = stack.physical["DataBucket"]
    s3 = boto3.client("s3", region_name="us-east-1")
    with acting_as("GenerateChunkFunction"):
        assert s3.list_objects_v2(Bucket=bucket, Prefix="chunks/b/")["KeyCount"] == 0
        with pytest.raises(ClientError) as denied:
            s3.list_objects_v2(Bucket=bucket, Prefix="manifests/")
        # the missing key the grant is there for still answers 404
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket=bucket, Key="chunks/b/00000.pending.json")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    with acting_as("FinalizeFunction"), pytest.raises(ClientError):
        s3.list_objects_v2(Bucket=bucket, Prefix="manifests/")
    assert [(d.owner, d.action) for d in enforcer.denials] == [
        ("GenerateChunkFunction", "s3:ListBucket"),
        ("FinalizeFunction", "s3:ListBucket"),
    ]


def test_a_transaction_is_denied_by_its_one_unallowed_item(
    stack: LocalStack, enforcer: IamEnforcer
) -> None:
    table = stack.physical["LedgerTable"]
    ddb = boto3.client("dynamodb", region_name=stack.region)
    put: Any = {"Put": {"TableName": table, "Item": {"pk": {"S": "p"}, "sk": {"S": "s"}}}}
    delete: Any = {"Delete": {"TableName": table, "Key": {"pk": {"S": "p"}, "sk": {"S": "t"}}}}
    # Ingest may put items, not delete them.
    with acting_as("IngestFunction"), pytest.raises(ClientError) as denied:
        ddb.transact_write_items(TransactItems=[put, delete])
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert f"dynamodb:DeleteItem on resource: arn:aws:dynamodb:{stack.region}:" in str(denied.value)
    assert ddb.scan(TableName=table)["Count"] == 0  # nothing of it was written


def test_moto_step_functions_engine_calls_are_the_state_machines(
    stack: LocalStack, enforcer: IamEnforcer
) -> None:
    # moto's engine builds its clients with the access key "ak" (boto_client.py).
    engine = boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="ak", aws_secret_access_key="sk"
    )
    with pytest.raises(ClientError) as denied:
        engine.invoke(FunctionName=stack.arns["IngestFunction"], Payload=b"{}")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "assumed-role/imagebatch-local-BatchStateMachineRole/" in str(denied.value)
    assert enforcer.denials[-1].owner == "BatchStateMachine"
