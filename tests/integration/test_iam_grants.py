"""What each role in template.yaml is granted, against what AWS will ask of it.

The local AWS (moto) checks no IAM policy, so a missing grant passes every local run and fails
the first call on AWS. These tests resolve the template's policies (every !Sub, !Ref, !GetAtt
and !If, as the local stack does) and match request ARNs against them with IAM's wildcard rules:

- the state machine's role against AWS's documented policy for a Distributed Map
  (https://docs.aws.amazon.com/step-functions/latest/dg/iam-policies-eg-dist-map.html);
- each function's role against the DynamoDB, S3 and Step Functions calls its code path makes,
  recorded from the botocore client while the handler runs against moto.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from imagebatch_local.cloud.lambda_runtime import LocalLambdaContext
from imagebatch_local.cloud.local_stack import LocalStack
from imagebatch_local.template import ACCOUNT_ID, REGION, load_template
from support.moto_sagemaker import INSTANCE_TYPE, deploy_moto_endpoint, scale_to_zero

from imagebatch.aws.clients import reset_clients
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
)

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
STACK = "imagebatch"
# an ECR image URI: the template reads the repository of its ECR grant from it
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imagebatch:1"
MAP_RUN_LABEL = "GenerateChunks-0a1b2c3d"


# --- the template, resolved ----------------------------------------------------------------


def _arn_for(stack: LocalStack, logical_id: str, resource: dict[str, Any]) -> tuple[str, str]:
    """The physical name and ARN a resource would have in a stack named STACK."""
    kind = resource["Type"]
    props = resource.get("Properties", {})
    if kind == "AWS::S3::Bucket":
        name = str(stack.resolve(props.get("BucketName")) or f"{STACK}-{logical_id}".lower())
        return name, f"arn:aws:s3:::{name}"
    if kind == "AWS::DynamoDB::Table":
        name = f"{STACK}-{logical_id}"
        return name, f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
    if kind == "AWS::Serverless::Function":
        name = f"{STACK}-{logical_id}"
        return name, f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
    if kind == "AWS::Serverless::StateMachine":
        name = str(stack.resolve(props.get("Name")) or f"{STACK}-{logical_id}")
        arn = f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}"
        return arn, arn
    if kind == "AWS::SNS::Topic":
        arn = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{STACK}-{logical_id}"
        return arn, arn
    if kind == "AWS::SQS::Queue":
        name = f"{STACK}-{logical_id}"
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{name}", (
            f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
        )
    if kind == "AWS::Events::EventBus":
        name = str(stack.resolve(props["Name"]))
        return name, f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{name}"
    if kind == "AWS::Bedrock::ApplicationInferenceProfile":
        profile_id = logical_id.lower()[:12]
        arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT_ID}:application-inference-profile/{profile_id}"
        return arn, arn
    return f"{STACK}-{logical_id}", f"arn:aws:unknown:{REGION}:{ACCOUNT_ID}:{logical_id}"


@pytest.fixture(scope="module")
def stack() -> LocalStack:
    """The template with every optional part on (the SageMaker backend too)."""
    stack = LocalStack(STACK, TEMPLATE_PATH.parent, load_template(TEMPLATE_PATH))
    stack.parameter_defaults({"EnableSageMaker": "true", "SageMakerImageUri": IMAGE})
    # Buckets first: other names may be built from them.
    ordered = sorted(stack.resources.items(), key=lambda kv: kv[1]["Type"] != "AWS::S3::Bucket")
    for logical_id, resource in ordered:
        physical, arn = _arn_for(stack, logical_id, resource)
        stack.physical[logical_id] = physical
        stack.arns[logical_id] = arn
        if resource["Type"] == "AWS::Bedrock::ApplicationInferenceProfile":
            stack.attributes[(logical_id, "InferenceProfileArn")] = arn
    return stack


@dataclass(frozen=True)
class Grant:
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    # StringLike conditions only (the one operator this template uses): key -> patterns
    string_like: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # the keys of StringLikeIfExists: a request without the key is not held to its patterns
    if_exists: tuple[str, ...] = ()


def _statements(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        statements = node.get("Statement")
        if isinstance(statements, list) and all(isinstance(s, dict) for s in statements):
            yield from statements
        for key, value in node.items():
            if key != "Statement":
                yield from _statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value)


def grants_of(stack: LocalStack, logical_id: str) -> list[Grant]:
    """The Allow statements of a function's or state machine's own policies, resolved."""
    policies = stack.template["Resources"][logical_id]["Properties"].get("Policies", [])
    grants = []
    for statement in _statements(stack.resolve(policies)):
        assert statement.get("Effect") == "Allow", f"{logical_id}: {statement}"
        actions = statement["Action"]
        resources = statement["Resource"]
        condition = statement.get("Condition", {})
        assert set(condition) <= {"StringLike", "StringEquals", "StringLikeIfExists"}, (
            f"{logical_id}: a condition not checked here"
        )
        # StringEquals is StringLike without wildcards (the template's values have none).
        operators = {
            **condition.get("StringLike", {}),
            **condition.get("StringEquals", {}),
            **condition.get("StringLikeIfExists", {}),
        }
        grants.append(
            Grant(
                tuple(actions if isinstance(actions, list) else [actions]),
                tuple(resources if isinstance(resources, list) else [resources]),
                tuple(
                    (key, tuple(value if isinstance(value, list) else [value]))
                    for key, value in operators.items()
                ),
                tuple(condition.get("StringLikeIfExists", {})),
            )
        )
    return grants


def arn_matches(pattern: str, arn: str) -> bool:
    """IAM's resource matching: '*' is any run of characters, '?' any one character."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(regex, arn) is not None


def allowed(
    grants: list[Grant], action: str, arn: str, context: dict[str, str] | None = None
) -> bool:
    """Whether an Allow covers the request; `context` holds its condition keys."""
    context = context or {}

    def conditions_hold(grant: Grant) -> bool:
        return all(
            any(arn_matches(p, context[key]) for p in patterns)
            if key in context
            else key in grant.if_exists
            for key, patterns in grant.string_like
        )

    return any(
        action in grant.actions
        and any(arn_matches(pattern, arn) for pattern in grant.resources)
        and conditions_hold(grant)
        for grant in grants
    )


def test_arn_matching_follows_iam_wildcards() -> None:
    # Guards the matcher every test below relies on.
    assert arn_matches("arn:aws:s3:::b/outputs/*", "arn:aws:s3:::b/outputs/x/y.png")
    assert not arn_matches("arn:aws:s3:::b/outputs/*", "arn:aws:s3:::b/reports/x")
    assert arn_matches("arn:aws:states:r:a:execution:sm:*", "arn:aws:states:r:a:execution:sm:id")
    assert not arn_matches(
        "arn:aws:states:r:a:execution:sm:*", "arn:aws:states:r:a:execution:sm/label:id"
    )
    assert arn_matches("a?c", "abc") and not arn_matches("a?c", "abbc")


# --- the state machine's role: AWS's documented Distributed Map policy -----------------------


def _state_machine(stack: LocalStack) -> tuple[str, str]:
    arn = stack.arns["BatchStateMachine"]
    return arn, arn.rsplit(":", 1)[-1]


def _states_grants(stack: LocalStack) -> list[Grant]:
    return [
        grant
        for grant in grants_of(stack, "BatchStateMachine")
        if any(action.startswith("states:") for action in grant.actions)
    ]


def test_state_machine_role_matches_the_documented_distributed_map_policy(
    stack: LocalStack,
) -> None:
    # GIVEN the batch state machine, a batch execution and one of its Map Run's children,
    # named <stateMachineName>/<mapRunLabel>:<id> (DescribeStateMachineForExecution's label)
    machine_arn, name = _state_machine(stack)
    execution = f"arn:aws:states:{REGION}:{ACCOUNT_ID}:execution:{name}:batch-1"
    child = f"arn:aws:states:{REGION}:{ACCOUNT_ID}:execution:{name}/{MAP_RUN_LABEL}:0f1e-2d3c"
    grants = _states_grants(stack)

    # THEN the role may do what the Distributed Map IAM policy page lists: start child
    # executions of this state machine, describe its executions, and redrive a Map Run's
    # child executions when a failed batch execution is redriven, and describe and stop a Map
    # Run's children (a failed Map stops the ones still running)
    assert allowed(grants, "states:StartExecution", machine_arn)
    assert allowed(grants, "states:DescribeExecution", execution)
    assert allowed(grants, "states:RedriveExecution", child)
    assert allowed(grants, "states:DescribeExecution", child)
    assert allowed(grants, "states:StopExecution", child)

    # AND nothing beyond it: no other state machine, no other states action
    other = machine_arn.replace(f":{name}", ":someone-elses")
    assert not allowed(grants, "states:StartExecution", other)
    assert not allowed(
        grants, "states:DescribeExecution", other.replace("stateMachine", "execution") + ":x"
    )
    documented = {
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "states:RedriveExecution",
    }
    granted = {action for grant in grants for action in grant.actions}
    assert granted == documented, f"states actions beyond the documented policy: {granted}"


@pytest.mark.parametrize(
    ("owner", "actions"),
    [
        ("SubmitChunkFunction", ("states:SendTaskSuccess",)),
        ("RecordResultFunction", ("states:SendTaskSuccess", "states:SendTaskFailure")),
        ("SageMakerExecutionRole", ("states:SendTaskHeartbeat",)),
    ],
)
def test_task_tokens_are_answered_on_the_map_runs_child_state_machine(
    stack: LocalStack, owner: str, actions: tuple[str, ...]
) -> None:
    # GIVEN the SageMaker chunk's token: issued inside the Distributed Map, by a child
    # execution whose state machine is <stateMachineName>/<mapRunLabel> (Map Run docs)
    machine_arn, _ = _state_machine(stack)
    child = f"{machine_arn}/{MAP_RUN_LABEL}"
    grants = grants_of(stack, owner)
    # THEN each SendTask* is granted on the child's ARN as on the parent's, and nowhere else
    for action in actions:
        assert allowed(grants, action, machine_arn), action
        assert allowed(grants, action, child), action
        other = machine_arn.replace(":stateMachine:", ":stateMachine:someone-elses-")
        assert not allowed(grants, action, f"{other}/{MAP_RUN_LABEL}"), action


# --- each function's role: the calls its code path makes ------------------------------------


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    params: dict[str, Any]


def _s3(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


def _copy_source(source: Any) -> tuple[str, str]:
    if isinstance(source, dict):
        return str(source["Bucket"]), str(source["Key"])
    bucket, _, key = str(source).lstrip("/").partition("/")
    return bucket, key.split("?", 1)[0]


S3_WRITES = {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutObject"}
TRANSACT_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def _table(name: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


def _s3_needs(call: Call) -> list[tuple[str, str]]:
    params = call.params
    bucket = str(params.get("Bucket"))
    if call.operation in {"GetObject", "HeadObject"}:
        return [("s3:GetObject", _s3(bucket, params["Key"]))]
    if call.operation in S3_WRITES:
        return [("s3:PutObject", _s3(bucket, params["Key"]))]
    if call.operation == "CopyObject":
        source_bucket, source_key = _copy_source(params["CopySource"])
        return [
            ("s3:PutObject", _s3(bucket, params["Key"])),
            ("s3:GetObject", _s3(source_bucket, source_key)),
        ]
    if call.operation in {"ListObjectsV2", "ListObjects"}:
        return [("s3:ListBucket", _s3(bucket))]
    return [(f"s3:{call.operation}", _s3(bucket, params.get("Key")))]


def _dynamodb_needs(call: Call) -> list[tuple[str, str]]:
    params = call.params
    if call.operation == "TransactWriteItems":
        return [
            (TRANSACT_ACTIONS[kind], _table(body["TableName"]))
            for item in params["TransactItems"]
            for kind, body in item.items()
        ]
    if call.operation == "TransactGetItems":
        return [
            ("dynamodb:GetItem", _table(i["Get"]["TableName"])) for i in params["TransactItems"]
        ]
    if call.operation in {"BatchGetItem", "BatchWriteItem"}:
        return [(f"dynamodb:{call.operation}", _table(t)) for t in params["RequestItems"]]
    return [(f"dynamodb:{call.operation}", _table(params["TableName"], params.get("IndexName")))]


def required_permissions(stack: LocalStack, call: Call) -> list[tuple[str, str]] | None:
    """(IAM action, resource ARN) pairs AWS authorizes the call against; None: not checked
    here (Bedrock, SageMaker Runtime: their grants name fixed resources in the template)."""
    if call.service == "s3":
        return _s3_needs(call)
    if call.service == "dynamodb":
        return _dynamodb_needs(call)
    if call.service == "states":
        if call.operation == "StartExecution":
            return [("states:StartExecution", str(call.params["stateMachineArn"]))]
        # A task token does not name its state machine; this stack has one.
        return [(f"states:{call.operation}", stack.arns["BatchStateMachine"])]
    if call.service == "api.sagemaker":  # the control plane's endpoint prefix
        name = str(call.params["EndpointName"]).lower()
        return [
            (
                f"sagemaker:{call.operation}",
                f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/{name}",
            )
        ]
    return None


class Recorder:
    """Every AWS API call any botocore client makes, from any thread, while switched on."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.on = False

    def __enter__(self) -> Recorder:
        self.on = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.on = False


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    # Every client operation goes through this private method (botocore/client.py).
    original = getattr(BaseClient, "_make_api_call")  # noqa: B009 - untyped in the stubs

    def record(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        if recorder.on:
            service = self.meta.service_model.endpoint_prefix
            recorder.calls.append(Call(service, operation_name, dict(api_params)))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return recorder


def denied_calls(stack: LocalStack, logical_id: str, calls: list[Call]) -> list[str]:
    grants = grants_of(stack, logical_id)
    denied = []
    for call in calls:
        # The condition keys this template uses: ListBucket's s3:prefix, PutEvents' source.
        context = {"s3:prefix": str(call.params["Prefix"])} if "Prefix" in call.params else {}
        if call.operation == "PutEvents":
            context["events:source"] = str(call.params["Entries"][0].get("Source", ""))
        for action, arn in required_permissions(stack, call) or []:
            if not allowed(grants, action, arn, context):
                denied.append(f"{call.service}.{call.operation}: {action} on {arn}")
    return sorted(set(denied))


class Handlers:
    """Runs a function's handler in-process against moto, with the template's environment."""

    def __init__(self, stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
        self._stack = stack
        self._monkeypatch = monkeypatch

    def environment(self, logical_id: str) -> dict[str, str]:
        defaults = self._stack.template.get("Globals", {}).get("Function", {})
        own = self._stack.template["Resources"][logical_id]["Properties"]
        merged = {
            **self._stack.resolve(defaults.get("Environment", {}).get("Variables", {})),
            **self._stack.resolve(own.get("Environment", {}).get("Variables", {})),
        }
        return {key: str(value) for key, value in merged.items()}

    def create_storage(self) -> tuple[str, str]:
        """The data bucket and the ledger table, named as the stack names them."""
        env = self.environment("FinalizeFunction")
        s3: Any = boto3.client("s3", region_name=REGION)
        if REGION == "us-east-1":  # S3 refuses a LocationConstraint of us-east-1
            s3.create_bucket(Bucket=env["DATA_BUCKET"])
        else:
            s3.create_bucket(
                Bucket=env["DATA_BUCKET"],
                CreateBucketConfiguration={"LocationConstraint": REGION},
            )
        table = self._stack.template["Resources"]["LedgerTable"]["Properties"]
        keys = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")
        shape = json.loads(json.dumps({key: table[key] for key in keys}))
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=env["LEDGER_TABLE"], **shape
        )
        return env["DATA_BUCKET"], env["LEDGER_TABLE"]

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        environment = {
            **self.environment(logical_id),
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        for key, value in environment.items():
            self._monkeypatch.setenv(key, value)
        reset_clients()
        resource = self._stack.template["Resources"][logical_id]["Properties"]
        path = TEMPLATE_PATH.parent / resource["CodeUri"] / "app.py"
        spec = importlib.util.spec_from_file_location(f"iam_{logical_id}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        context = LocalLambdaContext(function_name=logical_id, memory_limit_in_mb=512, timeout_s=60)
        return module.handler(event, context)


@pytest.fixture
def handlers(stack: LocalStack, aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Handlers]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    yield Handlers(stack, monkeypatch)
    reset_clients()


def _jobs(n: int) -> list[ImageJob]:
    return [
        ImageJob(
            image_id=f"a-{i}",
            item_id="a",
            index=i,
            line=2,
            prompt="a mug",
            width=64,
            height=64,
            seed=i,
            model="sd15",
        )
        for i in range(1, n + 1)
    ]


def _sagemaker_result(bucket: str, table: str, topic: str) -> dict[str, Any]:
    """A finished async request in S3 and the SQS event its SNS notification (from `topic`)
    arrives in."""
    store = BatchStore(boto3.client("s3", region_name=REGION), bucket)
    Ledger(boto3.client("dynamodb", region_name=REGION), table).create_batch(
        "b1", {"status": "RUNNING", "images_total": 2}
    )
    invocation = ChunkInvocation(
        batch_id="b1",
        chunk_id="00000",
        bucket=bucket,
        output_prefix="outputs/",
        task_token="token-" + "x" * 100,
        images=_jobs(2),
    )
    store.put_json("async-inputs/b1/x.json", invocation.model_dump_json().encode())
    result = InvocationResult(
        batch_id="b1",
        chunk_id="00000",
        accelerator="cpu",
        max_batch=2,
        images=[
            ServedImage(image_id=f"a-{i}", status="SUCCEEDED", seed=i, key=f"k{i}", call=0)
            for i in (1, 2)
        ],
        calls=[ServingCall(call=0, width=64, height=64, steps=1, images=2, seconds=0.5)],
    )
    store.put_json("async-outputs/x.out", result.model_dump_json().encode())
    notification = AsyncNotification.model_validate(
        {
            "invocationStatus": "Completed",
            "inferenceId": "x",
            "requestParameters": {
                "endpointName": "ep",
                "inputLocation": f"s3://{bucket}/async-inputs/b1/x.json",
            },
            "responseParameters": {"outputLocation": f"s3://{bucket}/async-outputs/x.out"},
        }
    )
    body = json.dumps(
        {
            "Type": "Notification",
            "TopicArn": topic,
            "Message": notification.model_dump_json(by_alias=True),
        }
    )
    return {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "0",
                    "SenderId": "sns",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:q",
                "awsRegion": REGION,
            }
        ]
    }


def test_record_result_is_granted_what_a_duplicate_result_calls(
    stack: LocalStack, handlers: Handlers, recorder: Recorder
) -> None:
    # GIVEN a finished SageMaker request whose notification arrives twice (SQS delivers at
    # least once), or late after the state machine retried the chunk
    bucket, table = handlers.create_storage()
    event = _sagemaker_result(bucket, table, stack.physical["InferenceSuccessTopic"])

    # WHEN RecordResult handles both deliveries
    with recorder:
        first = handlers.invoke("RecordResultFunction", event)
        second = handlers.invoke("RecordResultFunction", event)

    # THEN both succeed, the second through the already-recorded path (BatchGetItem)...
    assert first == {"batchItemFailures": []} and second == {"batchItemFailures": []}
    assert any(call.operation == "BatchGetItem" for call in recorder.calls)
    # ...and every call either made is granted to RecordResultFunction's role
    assert denied_calls(stack, "RecordResultFunction", recorder.calls) == []


# The rest of a batch's functions, each through its handler on one small batch.

DEMO_MANIFEST = TEMPLATE_PATH.parent / "events" / "manifests" / "demo.jsonl"


def _s3_event(bucket: str, key: str, etag: str, version: str | None) -> dict[str, Any]:
    template = json.loads((TEMPLATE_PATH.parent / "events" / "s3-manifest-put.json").read_text())
    record = template["Records"][0]
    record["awsRegion"] = REGION
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["s3"]["object"].update(key=key, eTag=etag)
    # the version S3 gave the upload (none in an unversioned bucket), as the event names it
    record["s3"]["object"].pop("versionId")
    if version is not None:
        record["s3"]["object"]["versionId"] = version
    return {"Records": [record]}


def _ingested(stack: LocalStack, handlers: Handlers, recorder: Recorder) -> dict[str, Any]:
    """Ingest the demo manifest (recorded); returns the execution input it started."""
    bucket, _ = handlers.create_storage()
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="sm", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    sfn = boto3.client("stepfunctions", region_name=REGION)
    name = stack.arns["BatchStateMachine"].rsplit(":", 1)[-1]
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=role)
    s3 = boto3.client("s3", region_name=REGION)
    key = f"manifests/{DEMO_MANIFEST.name}"
    put = s3.put_object(Bucket=bucket, Key=key, Body=DEMO_MANIFEST.read_bytes())
    with recorder:
        outcome = handlers.invoke(
            "IngestFunction", _s3_event(bucket, key, put["ETag"], put.get("VersionId"))
        )
    assert outcome["batches"][0]["status"] == "STARTED", outcome
    executions = sfn.list_executions(stateMachineArn=stack.arns["BatchStateMachine"])
    described = sfn.describe_execution(executionArn=executions["executions"][0]["executionArn"])
    execution_input: dict[str, Any] = json.loads(described["input"])
    return execution_input


def test_ingest_is_granted_what_it_calls(
    stack: LocalStack, handlers: Handlers, recorder: Recorder
) -> None:
    _ingested(stack, handlers, recorder)
    assert {"GetObject", "PutObject", "StartExecution"} <= {c.operation for c in recorder.calls}
    assert denied_calls(stack, "IngestFunction", recorder.calls) == []


def _stability_client(images: int) -> Any:
    """A Bedrock Runtime client whose InvokeModel answers like SD3.5 Large, `images` times."""
    import base64
    import io

    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    client = boto3.client("bedrock-runtime", region_name=REGION)
    stubber = Stubber(client)
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    for seed in range(images):
        body = json.dumps(
            {"seeds": [seed], "finish_reasons": [None], "images": [base64.b64encode(png).decode()]}
        ).encode()
        stubber.add_response(
            "invoke_model",
            {"body": StreamingBody(io.BytesIO(body), len(body)), "contentType": "application/json"},
        )
    stubber.activate()
    return client


def test_generate_finalize_and_contact_sheet_are_granted_what_they_call(
    stack: LocalStack, handlers: Handlers, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an ingested batch
    execution_input = _ingested(stack, handlers, recorder)
    bucket = execution_input["bucket"]
    index = BatchStore(boto3.client("s3", region_name=REGION), bucket).get_chunk_index(
        execution_input["batch_id"]
    )
    item = {**execution_input, "chunk": index[0].model_dump()}
    # Bedrock is not in moto: the chunk's InvokeModel calls are answered by a Stubber.
    stubbed = functools.lru_cache(maxsize=1)(lambda: _stability_client(index[0].images))
    monkeypatch.setattr("imagebatch.aws.clients.bedrock_runtime_client", stubbed)
    # a call near the invocation's end (60 s here) gets a client bounded by the time left
    within = functools.lru_cache(maxsize=32)(lambda total_s: stubbed())
    monkeypatch.setattr("imagebatch.aws.clients.bedrock_runtime_client_within", within)

    # WHEN a chunk is generated, then the batch finalized and its contact sheet drawn
    recorder.calls.clear()
    with recorder:
        result = handlers.invoke("GenerateChunkFunction", item)
    assert result["succeeded"] == index[0].images
    generate_calls = list(recorder.calls)
    recorder.calls.clear()
    with recorder:
        report = handlers.invoke("FinalizeFunction", execution_input)
    assert report["images_total"] == sum(ref.images for ref in index)
    finalize_calls = list(recorder.calls)
    recorder.calls.clear()
    with recorder:
        handlers.invoke("ContactSheetFunction", {"batch_id": report["batch_id"], "bucket": bucket})

    # THEN each function's role grants every call it made
    assert "TransactWriteItems" in {c.operation for c in generate_calls}
    assert denied_calls(stack, "GenerateChunkFunction", generate_calls) == []
    assert denied_calls(stack, "FinalizeFunction", finalize_calls) == []
    assert denied_calls(stack, "ContactSheetFunction", recorder.calls) == []


def test_finalize_run_again_after_it_settled_is_granted_what_it_calls(
    stack: LocalStack, handlers: Handlers, recorder: Recorder
) -> None:
    # GIVEN a batch finalize has settled (its one chunk failed for good: no Bedrock needed)
    execution_input = _ingested(stack, handlers, recorder)
    handlers.invoke("FinalizeFunction", execution_input)

    # WHEN Step Functions runs finalize again (its reply lost, or killed after the settle:
    # the chaos e2e found this one denied)
    recorder.calls.clear()
    with recorder:
        again = handlers.invoke("FinalizeFunction", execution_input)

    # THEN it answers with the stored report, and its role grants every call it made
    assert again["batch_id"] == execution_input["batch_id"]
    assert denied_calls(stack, "FinalizeFunction", recorder.calls) == []


def test_submit_chunk_and_query_are_granted_what_they_call(
    stack: LocalStack, handlers: Handlers, recorder: Recorder
) -> None:
    from imagebatch_local.cloud.http_api import http_api_event

    # GIVEN an ingested batch, one of its chunks sent to the SageMaker endpoint
    execution_input = _ingested(stack, handlers, recorder)
    index = BatchStore(
        boto3.client("s3", region_name=REGION), execution_input["bucket"]
    ).get_chunk_index(execution_input["batch_id"])
    task = {
        "batch_id": execution_input["batch_id"],
        "bucket": execution_input["bucket"],
        "chunk": index[0].model_dump(),
        "task_token": "token-" + "x" * 100,
        "retry_count": 0,
    }
    recorder.calls.clear()
    with recorder:
        receipt = handlers.invoke("SubmitChunkFunction", task)
    assert receipt["images"] == index[0].images
    submit_calls = list(recorder.calls)

    # WHEN the query API lists batches and reads this one
    recorder.calls.clear()
    with recorder:
        for path in ("/batches", f"/batches/{execution_input['batch_id']}"):
            response = handlers.invoke("QueryFunction", http_api_event("GET", path))
            assert response["statusCode"] == 200, response

    # THEN both roles grant every call made
    assert denied_calls(stack, "SubmitChunkFunction", submit_calls) == []
    assert denied_calls(stack, "QueryFunction", recorder.calls) == []


def test_catalog_is_granted_what_it_calls(
    stack: LocalStack, handlers: Handlers, recorder: Recorder
) -> None:
    # GIVEN the sample catalog under catalogs/<name>/ in the data bucket
    bucket, _ = handlers.create_storage()
    s3 = boto3.client("s3", region_name=REGION)
    samples = TEMPLATE_PATH.parent / "events" / "catalog"
    config = json.loads((samples / "config.json").read_text())
    for sample in ("config.json", config["products"]):
        key = f"catalogs/{config['name']}/{sample}"
        s3.put_object(Bucket=bucket, Key=key, Body=(samples / sample).read_bytes())

    # WHEN the nightly schedule fires
    with recorder:
        handlers.invoke("CatalogFunction", {"scheduled_time": "2026-11-22T02:00:00Z"})

    # THEN it listed (under its prefix condition), read and wrote only what it is granted
    operations = {call.operation for call in recorder.calls}
    assert {"ListObjectsV2", "GetObject", "PutObject"} <= operations, operations
    assert denied_calls(stack, "CatalogFunction", recorder.calls) == []


def test_the_endpoint_observer_is_granted_what_it_calls(
    stack: LocalStack, handlers: Handlers, recorder: Recorder
) -> None:
    # GIVEN the stack's endpoint in moto's SageMaker with its one initial instance
    handlers.create_storage()
    name = handlers.environment("EndpointObserverFunction")["SAGEMAKER_ENDPOINT_NAME"]
    deploy_moto_endpoint(name, region=REGION, account=ACCOUNT_ID)
    handlers._monkeypatch.setenv("SAGEMAKER_INSTANCE_TYPE", INSTANCE_TYPE)
    event = {"detail-type": "imagebatch schedule"}
    # WHEN the schedule ticks, the endpoint scales to zero, and it ticks again (a window
    # closes and is attributed)
    with recorder:
        handlers.invoke("EndpointObserverFunction", event)
    scale_to_zero(name, region=REGION)
    with recorder:
        handlers.invoke("EndpointObserverFunction", event)
    observer = [c for c in recorder.calls if c.service in {"api.sagemaker", "dynamodb"}]
    assert any(c.operation == "DescribeEndpoint" for c in observer)
    # THEN its role grants every call it made
    assert denied_calls(stack, "EndpointObserverFunction", observer) == []


COVERED_FUNCTIONS = {
    "EndpointObserverFunction": test_the_endpoint_observer_is_granted_what_it_calls,
    "IngestFunction": test_ingest_is_granted_what_it_calls,
    "GenerateChunkFunction": test_generate_finalize_and_contact_sheet_are_granted_what_they_call,
    "FinalizeFunction": test_generate_finalize_and_contact_sheet_are_granted_what_they_call,
    "ContactSheetFunction": test_generate_finalize_and_contact_sheet_are_granted_what_they_call,
    "CatalogFunction": test_catalog_is_granted_what_it_calls,
    "QueryFunction": test_submit_chunk_and_query_are_granted_what_they_call,
    "SubmitChunkFunction": test_submit_chunk_and_query_are_granted_what_they_call,
    "RecordResultFunction": test_record_result_is_granted_what_a_duplicate_result_calls,
}


def test_every_function_has_its_calls_checked(stack: LocalStack) -> None:
    functions = set(stack.of_type("AWS::Serverless::Function"))
    assert functions == set(COVERED_FUNCTIONS), "give a new function a scenario above"


def test_conditions_are_checked() -> None:
    grant = Grant(("s3:ListBucket",), ("arn:aws:s3:::b",), (("s3:prefix", ("catalogs/*",)),))
    assert allowed([grant], "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "catalogs/x/"})
    assert not allowed([grant], "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "outputs/"})
    assert not allowed([grant], "s3:ListBucket", "arn:aws:s3:::b")


def test_record_result_may_learn_that_a_submitted_file_is_missing(stack: LocalStack) -> None:
    # A request submitted without its `.submitted.json` (submit stopped between
    # InvokeEndpointAsync and that PUT) is read as missing (ObjectMissingError): S3 answers
    # 404 NoSuchKey only to a caller allowed s3:ListBucket on the bucket, otherwise 403
    # AccessDenied, and every delivery of that result fails (the chaos e2e, seeds 5 to 15).
    bucket = stack.arns["DataBucket"]
    assert allowed(grants_of(stack, "RecordResultFunction"), "s3:ListBucket", bucket)
