"""Least-privilege gaps of issue 19, read from template.yaml: each grant as narrow as what the
code calls, and every queue and bucket denying plain HTTP for every action.

test_template.py holds the general rules (explicit actions, vetted policies); these tests pin
the specific grants an insider in the account could otherwise lean on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode(str(ROOT / "template.yaml"))
    assert not matches and isinstance(decoded, dict)
    parsed: dict[str, Any] = json.loads(json.dumps(decoded))
    return parsed


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def statements_of(template: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    """The IAM statements a function, state machine or role declares; a conditional statement
    (!If [cond, statement, AWS::NoValue]) counts as declared."""
    props = template["Resources"][logical_id].get("Properties", {})
    found: list[dict[str, Any]] = []
    documents = [p.get("PolicyDocument", p) for p in as_list(props.get("Policies"))]
    for document in documents:
        if not isinstance(document, dict):
            continue
        for node in as_list(document.get("Statement")):
            statement = node["Fn::If"][1] if "Fn::If" in node else node
            if isinstance(statement, dict) and "Effect" in statement:
                found.append(statement)
    return found


def granting(template: dict[str, Any], logical_id: str, action: str) -> list[dict[str, Any]]:
    return [
        s
        for s in statements_of(template, logical_id)
        if s["Effect"] == "Allow" and action in as_list(s["Action"])
    ]


def text(node: Any) -> str:
    return json.dumps(node, sort_keys=True)


def queues(template: dict[str, Any]) -> list[str]:
    return [
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::SQS::Queue"
    ]


def queue_policy_statements(template: dict[str, Any], queue: str) -> Iterator[dict[str, Any]]:
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::SQS::QueuePolicy":
            continue
        props = resource["Properties"]
        if {"Ref": queue} in as_list(props.get("Queues")):
            yield from as_list(props["PolicyDocument"]["Statement"])


def denies_plain_http(statement: dict[str, Any]) -> bool:
    secure = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
    return statement.get("Effect") == "Deny" and str(secure).lower() == "false"


# --- RecordResult's queue ------------------------------------------------------------------


def test_record_result_reads_only_its_own_queue(template: dict[str, Any]) -> None:
    # SAM gives a function with an SQS event AWSLambdaSQSQueueExecutionRole: ReceiveMessage and
    # DeleteMessage on every queue in the account. The mapping is declared as a resource
    # instead, and the role grants those actions on the result queue only.
    events = template["Resources"]["RecordResultFunction"]["Properties"].get("Events", {})
    sqs_events = [name for name, event in events.items() if event["Type"] == "SQS"]
    assert not sqs_events, f"an SQS event attaches AWSLambdaSQSQueueExecutionRole: {sqs_events}"
    mappings = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["FunctionName"] == {"Ref": "RecordResultFunction"}
    ]
    assert len(mappings) == 1
    assert mappings[0]["EventSourceArn"] == {"Fn::GetAtt": ["InferenceResultQueue", "Arn"]}
    assert mappings[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        grants = granting(template, "RecordResultFunction", action)
        assert [g["Resource"] for g in grants] == [
            {"Fn::GetAtt": ["InferenceResultQueue", "Arn"]}
        ], action


# --- Bedrock -------------------------------------------------------------------------------


def test_bedrock_grants_exactly_the_catalogues_active_models(template: dict[str, Any]) -> None:
    # stability.* and amazon.* would be every model of both providers (LLMs and video too);
    # the grant names each model the catalogue serves (legacy ones are refused by validation).
    catalogue = json.loads((ROOT / "src/imagebatch/data/bedrock_models.json").read_text())
    active = {m["model_id"] for m in catalogue["models"] if m["lifecycle"]["status"] == "active"}
    granted: set[str] = set()
    for statement in granting(template, "GenerateChunkFunction", "bedrock:InvokeModel"):
        for resource in as_list(statement["Resource"]):
            arn = resource.get("Fn::Sub", "") if isinstance(resource, dict) else resource
            if "foundation-model/" in arn:
                assert "*" not in arn, f"a wildcard model grant: {arn}"
                granted.add(arn.rsplit("foundation-model/", 1)[1])
    assert granted == active
    # AND the stack's inference profiles stay granted
    profiles = text(granting(template, "GenerateChunkFunction", "bedrock:InvokeModel"))
    for profile in ("Sd35LargeProfile", "StableImageCoreProfile", "StableImageUltraProfile"):
        assert profile in profiles


# --- ECR -----------------------------------------------------------------------------------


def _stack(parameters: dict[str, str], name: str = "imagebatch") -> Any:
    from imagebatch_local.template import StackTemplate, load_template

    stack = StackTemplate(name, ROOT, load_template(ROOT / "template.yaml"), "us-west-2")
    stack.parameter_defaults(parameters)
    return stack


@pytest.mark.parametrize(
    "image",
    [
        "111122223333.dkr.ecr.us-west-2.amazonaws.com/imagebatch/neuron:2.20",
        "111122223333.dkr.ecr.us-west-2.amazonaws.com/imagebatch/neuron@sha256:0123abcd",
    ],
)
@pytest.mark.parametrize("role", ["SageMakerExecutionRole", "ModelCompileRole"])
def test_ecr_pulls_are_granted_on_the_images_repository_only(
    template: dict[str, Any], role: str, image: str
) -> None:
    # repository/* would let the role pull every image of the account
    stack = _stack({"EnableSageMaker": "true", "SageMakerImageUri": image})
    pulls = [
        s for s in statements_of(template, role) if "ecr:BatchGetImage" in as_list(s["Action"])
    ]
    assert pulls
    resources = {str(r) for s in pulls for r in as_list(stack.resolve(s["Resource"]))}
    assert resources == {"arn:aws:ecr:us-west-2:111122223333:repository/imagebatch/neuron"}


# --- ingest's failed events ---------------------------------------------------------------


def test_ingest_failures_go_to_their_own_encrypted_queue_sent_by_ingest_alone(
    template: dict[str, Any],
) -> None:
    # The on-failure destination of S3's asynchronous invocations: a standard queue (Lambda
    # sends no record to a FIFO one), encrypted at rest.
    props = template["Resources"]["IngestFunction"]["Properties"]
    on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["IngestFailureQueue", "Arn"]},
    }
    queue = template["Resources"]["IngestFailureQueue"]["Properties"]
    assert not queue.get("FifoQueue")
    assert queue.get("SqsManagedSseEnabled") is True or queue.get("KmsMasterKeyId")
    # SAM grants the function's role sqs:SendMessage on its destination and nothing else
    # (SQSSendMessagePolicy); no statement in the template grants anyone more on it, and
    # ingest itself declares no SQS action at all.
    assert not [s for s in statements_of(template, "IngestFunction") if "sqs:" in text(s)]
    for logical_id in template["Resources"]:
        for statement in statements_of(template, logical_id):
            if statement["Effect"] == "Allow":
                assert "IngestFailureQueue" not in text(statement.get("Resource")), logical_id
    policy = list(queue_policy_statements(template, "IngestFailureQueue"))
    assert [s for s in policy if s["Effect"] == "Allow"] == [], "the queue policy only denies"
    # and it denies every sender but ingest's role: a record there is replayed through ingest
    (only_ingest,) = [s for s in policy if s.get("Sid") == "OnlyFromIngest"]
    assert only_ingest["Effect"] == "Deny"
    assert only_ingest["Principal"] == {"AWS": "*"}
    assert only_ingest["Action"] == "sqs:SendMessage"
    assert only_ingest["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["IngestFunctionRole", "Arn"]}}
    }


# --- TLS only, and every dead-letter queue watched ------------------------------------------


def test_the_bucket_refuses_every_s3_action_over_plain_http(template: dict[str, Any]) -> None:
    # four actions left the rest (tagging, ACLs, versions, multipart...) open over plain HTTP
    statements = as_list(
        template["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    )
    # first, so that a merge with other statements keeps it in one obvious place
    assert denies_plain_http(statements[0])
    assert statements[0]["Action"] == "s3:*"


@pytest.mark.parametrize(
    "queue",
    [
        "IngestFailureQueue",
        "CatalogScheduleDeadLetterQueue",
        "InferenceResultQueue",
        "InferenceResultDeadLetterQueue",
    ],
)
def test_every_queue_refuses_every_sqs_action_over_plain_http(
    template: dict[str, Any], queue: str
) -> None:
    assert sorted(queues(template)) == sorted(
        [
            "IngestFailureQueue",
            "CatalogScheduleDeadLetterQueue",
            "InferenceResultQueue",
            "InferenceResultDeadLetterQueue",
        ]
    ), "a new queue: add it here"
    statements = list(queue_policy_statements(template, queue))
    assert statements, f"{queue}: no AWS::SQS::QueuePolicy"
    assert denies_plain_http(statements[0]), f"{queue}: the TLS deny is not the first statement"
    assert statements[0]["Action"] == "sqs:*"
    assert statements[0]["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}


@pytest.mark.parametrize(
    "queue",
    ["IngestFailureQueue", "CatalogScheduleDeadLetterQueue", "InferenceResultDeadLetterQueue"],
)
def test_every_dead_letter_queue_has_an_alarm_that_tells_someone(
    template: dict[str, Any], queue: str
) -> None:
    # a message there is work that failed for good: a night not rendered, a result not recorded
    alarms = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("Namespace") == "AWS/SQS"
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}
        in r["Properties"].get("Dimensions", [])
    ]
    assert len(alarms) == 1, f"no alarm on {queue}"
    assert alarms[0]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarms[0]["Threshold"] == 1
    assert alarms[0]["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarms[0]["AlarmActions"] == [{"Ref": "AlertTopic"}]


# --- names within their limits for any stack name --------------------------------------------

ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # CreateEndpoint's EndpointName


def test_the_endpoint_name_fits_for_the_longest_stack_name(template: dict[str, Any]) -> None:
    # CloudFormation takes stack names of 128 characters; SageMaker endpoint names stop at 63,
    # so "<stack>-images" failed the deploy of any stack name over 56 characters.
    name = "A" + "b-" * 63 + "c"
    assert len(name) == 128
    stack = _stack({"EnableSageMaker": "true"}, name=name)
    endpoint = stack.resolve(
        template["Resources"]["SageMakerEndpoint"]["Properties"]["EndpointName"]
    )
    assert ENDPOINT_NAME.fullmatch(endpoint), endpoint
    # AND everything that names the endpoint names this one
    for function in ("SubmitChunkFunction", "RecordResultFunction", "EndpointObserverFunction"):
        variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert stack.resolve(variables["SAGEMAKER_ENDPOINT_NAME"]) == endpoint
    target = template["Resources"]["SageMakerScalableTarget"]["Properties"]
    assert stack.resolve(target["ResourceId"]) == f"endpoint/{endpoint}/variant/AllTraffic"
    mentions = re.findall(r"StackName\}-images", (ROOT / "template.yaml").read_text())
    assert not mentions, "an endpoint name still built from the stack name"


# --- the query API -------------------------------------------------------------------------


def test_the_query_api_stage_is_throttled(template: dict[str, Any]) -> None:
    # Without a stage limit one caller allowed execute-api:Invoke can spend the account's
    # API Gateway and Lambda concurrency (and DynamoDB reads) on queries.
    api = template["Resources"]["QueryApi"]["Properties"]
    route_settings = api["DefaultRouteSettings"]
    assert route_settings["ThrottlingBurstLimit"] == {"Ref": "QueryApiBurstLimit"}
    assert route_settings["ThrottlingRateLimit"] == {"Ref": "QueryApiRateLimit"}
    for name in ("QueryApiBurstLimit", "QueryApiRateLimit"):
        parameter = template["Parameters"][name]
        assert parameter["Type"] == "Number" and parameter["MinValue"] >= 1


# --- s3:ListBucket ------------------------------------------------------------------------


def _functions(template: dict[str, Any]) -> list[str]:
    return [
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    ]


def test_every_list_bucket_grant_is_limited_to_the_prefixes_the_function_reads(
    template: dict[str, Any],
) -> None:
    # An unconditioned s3:ListBucket lets a function (or whoever runs code as it) enumerate
    # every key in the bucket: every team's manifests, outputs and reports. Each grant names
    # s3:prefix patterns, and each pattern is one the function may already read (GetObject).
    checked = 0
    for function in _functions(template):
        readable = [
            text(r).strip('"')
            for s in granting(template, function, "s3:GetObject")
            for r in as_list(s["Resource"])
        ]
        for statement in granting(template, function, "s3:ListBucket"):
            checked += 1
            conditions = statement.get("Condition", {})
            patterns = [
                pattern
                for operator in ("StringLike", "StringLikeIfExists")
                for pattern in as_list(conditions.get(operator, {}).get("s3:prefix"))
            ]
            assert patterns, f"{function}: s3:ListBucket on the whole bucket"
            for pattern in patterns:
                assert pattern.endswith("/*") and "*" not in pattern[:-1], (function, pattern)
                assert any(f"/{pattern}" in r for r in readable), (function, pattern, readable)
    assert checked >= 4, "the functions that learn a key is missing hold s3:ListBucket"
