"""template.yaml's optional SageMaker backend, and the local stack's reading of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode
from imagebatch_local.cloud.local_stack import LocalStack
from imagebatch_local.template import load_template

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
ASL_PATH = Path(__file__).resolve().parents[2] / "statemachine" / "batch.asl.json"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode(str(TEMPLATE_PATH))
    assert not matches
    assert decoded is not None
    return dict(decoded)


def props(template: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(template["Resources"][name]["Properties"])


SAGEMAKER_RESOURCES = (
    "SageMakerModel",
    "SageMakerEndpointConfig",
    "SageMakerEndpoint",
    "SageMakerScalableTarget",
    "SageMakerBacklogScaling",
    "SageMakerWakeFromZero",
    "SageMakerBacklogWithoutCapacityAlarm",
    "InferenceSuccessTopic",
    "InferenceErrorTopic",
    "InferenceResultQueue",
    "InferenceResultDeadLetterQueue",
    "SubmitChunkFunction",
    "RecordResultFunction",
)


def test_the_whole_backend_is_behind_one_condition(template: dict[str, Any]) -> None:
    assert template["Parameters"]["EnableSageMaker"]["Default"] == "false"
    for name in SAGEMAKER_RESOURCES:
        assert template["Resources"][name]["Condition"] == "SageMakerEnabled", name


def test_async_config_writes_to_the_bucket_and_notifies_both_topics(
    template: dict[str, Any],
) -> None:
    config = props(template, "SageMakerEndpointConfig")["AsyncInferenceConfig"]
    output = config["OutputConfig"]
    assert "async-outputs/" in output["S3OutputPath"]["Fn::Sub"]
    assert "async-failures/" in output["S3FailurePath"]["Fn::Sub"]
    assert output["NotificationConfig"] == {
        "SuccessTopic": {"Ref": "InferenceSuccessTopic"},
        "ErrorTopic": {"Ref": "InferenceErrorTopic"},
    }
    assert config["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] >= 1


def test_scales_to_zero_and_wakes_on_backlog_without_capacity(template: dict[str, Any]) -> None:
    assert props(template, "SageMakerScalableTarget")["MinCapacity"] == 0
    tracking = props(template, "SageMakerBacklogScaling")
    metric = tracking["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    assert metric["MetricName"] == "ApproximateBacklogSizePerInstance"
    # scale-in is ours, after the idle tail, not the target tracking's own low alarm
    assert tracking["TargetTrackingScalingPolicyConfiguration"]["DisableScaleIn"] is True
    idle = props(template, "SageMakerIdleAlarm")
    assert idle["MetricName"] == "ApproximateBacklogSize"
    assert idle["EvaluationPeriods"] == idle["DatapointsToAlarm"]
    assert idle["EvaluationPeriods"] == {"Ref": "SageMakerIdleTailMinutes"}
    assert idle["Period"] == 60
    assert idle["AlarmActions"] == [{"Ref": "SageMakerScaleInToZero"}]
    to_zero = props(template, "SageMakerScaleInToZero")["StepScalingPolicyConfiguration"]
    assert to_zero["AdjustmentType"] == "ExactCapacity"
    assert to_zero["StepAdjustments"] == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}]
    alarm = props(template, "SageMakerBacklogWithoutCapacityAlarm")
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [{"Ref": "SageMakerWakeFromZero"}]
    assert props(template, "SageMakerWakeFromZero")["PolicyType"] == "StepScaling"


def test_results_flow_sns_to_sqs_with_a_dlq_to_a_partial_batch_consumer(
    template: dict[str, Any],
) -> None:
    for name in ("InferenceSuccessSubscription", "InferenceErrorSubscription"):
        subscription = props(template, name)
        assert subscription["Protocol"] == "sqs"
        assert subscription["Endpoint"] == {"Fn::GetAtt": ["InferenceResultQueue", "Arn"]}
    queue = props(template, "InferenceResultQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["InferenceResultDeadLetterQueue", "Arn"]
    }
    # an explicit mapping, not an SQS event (test_template_least_privilege.py says why)
    mapping = props(template, "InferenceResultsMapping")
    assert mapping["FunctionName"] == {"Ref": "RecordResultFunction"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # six times the consumer's timeout (Globals: 60 s)
    assert queue["VisibilityTimeout"] >= 6 * template["Globals"]["Function"]["Timeout"]


def test_state_machine_chooses_the_backend_and_waits_for_the_token() -> None:
    asl = json.loads(ASL_PATH.read_text())
    states = asl["States"]["GenerateChunks"]["ItemProcessor"]["States"]
    assert asl["States"]["GenerateChunks"]["ItemProcessor"]["StartAt"] == "ChooseBackend"
    choice = states["ChooseBackend"]
    assert choice["Choices"][0]["StringEquals"] == "sagemaker"
    assert choice["Default"] == "GenerateChunk"
    submit = states["SubmitChunk"]
    assert submit["Resource"].endswith("lambda:invoke.waitForTaskToken")
    assert submit["Parameters"]["Payload"]["task_token.$"] == "$$.Task.Token"
    assert submit["HeartbeatSeconds"] < submit["TimeoutSeconds"]
    retried = {e for r in submit["Retry"] for e in r["ErrorEquals"]}
    assert {"SageMaker.InferenceFailed", "States.HeartbeatTimeout"} <= retried
    assert submit["Catch"][0]["Next"] == "RecordChunkFailure"


def test_local_stack_evaluates_conditions_if_and_no_value() -> None:
    stack = LocalStack("s", TEMPLATE_PATH.parent, load_template(TEMPLATE_PATH))
    stack.parameter_defaults({})
    assert not stack.condition("SageMakerEnabled")
    assert "SubmitChunkFunction" not in stack.resources
    assert stack.resolve({"Fn::If": ["SageMakerEnabled", "yes", "no"]}) == "no"
    assert stack.resolve(["a", {"Ref": "AWS::NoValue"}]) == ["a"]
    stack.parameter_defaults({"EnableSageMaker": "true"})
    assert stack.condition("SageMakerEnabled")
    assert "SubmitChunkFunction" in stack.resources


def test_the_budget_hold_bounds_record_result_as_deployed(template: dict[str, Any]) -> None:
    # SubmitChunk sizes each hold with RecordResult's memory and timeout: they must be the
    # function's own, and the queue's visibility timeout at least six times that timeout
    record = props(template, "RecordResultFunction")
    env = props(template, "SubmitChunkFunction")["Environment"]["Variables"]
    assert int(env["RECORD_RESULT_MEMORY_MB"]) == record["MemorySize"]
    assert int(env["RECORD_RESULT_TIMEOUT_S"]) == record["Timeout"]
    queue = props(template, "InferenceResultQueue")
    assert queue["VisibilityTimeout"] >= 6 * record["Timeout"]


def test_every_instance_type_the_template_allows_has_a_price_and_a_speed(
    template: dict[str, Any],
) -> None:
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch.costs.sagemaker_seconds import reference_throughput

    prices = load_aws_prices().region("us-east-1")
    for instance_type in template["Parameters"]["SageMakerInstanceType"]["AllowedValues"]:
        assert prices.instance(instance_type).usd_per_hour > 0
        assert reference_throughput(instance_type, "any-model").seconds_per_image > 0


def _model_data_stack(overrides: dict[str, str]) -> LocalStack:
    stack = LocalStack("s", TEMPLATE_PATH.parent, load_template(TEMPLATE_PATH))
    stack.parameter_defaults({"EnableSageMaker": "true", **overrides})
    stack.physical["DataBucket"] = "data-bucket"
    stack.arns["DataBucket"] = "arn:aws:s3:::data-bucket"
    for topic in ("InferenceSuccessTopic", "InferenceErrorTopic"):
        stack.physical[topic] = f"arn:aws:sns:us-west-2:123456789012:{topic}"
    return stack


def _grants(stack: LocalStack, role: str, action: str) -> list[str]:
    policies = stack.resolve(stack.resources[role]["Properties"]["Policies"])
    found: list[str] = []
    for policy in policies:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            if action in (actions if isinstance(actions, list) else [actions]):
                resources = statement["Resource"]
                found += resources if isinstance(resources, list) else [resources]
    return found


def _model_data_url(stack: LocalStack) -> str:
    container = stack.resources["SageMakerModel"]["Properties"]["PrimaryContainer"]
    return str(stack.resolve(container["ModelDataUrl"]))


def test_the_model_is_read_from_the_data_bucket_by_default() -> None:
    # GIVEN the endpoint enabled with no model bucket: the two-deploy order of docs/sagemaker.md
    stack = _model_data_stack({"SageMakerModelDataKey": "models/job-1/output/model.tar.gz"})
    # THEN the model comes from the stack's own bucket, and only that object may be read
    assert _model_data_url(stack) == "s3://data-bucket/models/job-1/output/model.tar.gz"
    reads = _grants(stack, "SageMakerExecutionRole", "s3:GetObject")
    assert "arn:aws:s3:::data-bucket/models/job-1/output/model.tar.gz" in reads
    assert not [r for r in reads if "data-bucket" not in r]


def test_a_model_bucket_makes_a_first_deploy_with_the_endpoint_possible() -> None:
    # GIVEN a bucket that exists before the stack does
    stack = _model_data_stack(
        {"SageMakerModelBucket": "my-models", "SageMakerModelDataKey": "models/sd21.tar.gz"}
    )
    # THEN the endpoint loads from it, and the execution role may read that one object and
    # nothing else of the bucket (least privilege: no prefix, no ListBucket)
    assert _model_data_url(stack) == "s3://my-models/models/sd21.tar.gz"
    reads = _grants(stack, "SageMakerExecutionRole", "s3:GetObject")
    assert [r for r in reads if "my-models" in r] == ["arn:aws:s3:::my-models/models/sd21.tar.gz"]
    assert "arn:aws:s3:::data-bucket/models/sd21.tar.gz" not in reads
    assert not _grants(stack, "SageMakerExecutionRole", "s3:ListBucket")


def test_the_compile_role_exists_before_the_endpoint_and_writes_only_models() -> None:
    # GIVEN a stack without the endpoint (the first of the two deploys)
    stack = LocalStack("s", TEMPLATE_PATH.parent, load_template(TEMPLATE_PATH))
    stack.parameter_defaults({})
    stack.physical["DataBucket"] = "data-bucket"
    stack.arns["DataBucket"] = "arn:aws:s3:::data-bucket"
    # THEN the compile job's role is there, trusted by SageMaker, and writes only models/
    role = stack.resources["ModelCompileRole"]
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"]["Service"] for s in trust] == ["sagemaker.amazonaws.com"]
    assert _grants(stack, "ModelCompileRole", "s3:PutObject") == [
        "arn:aws:s3:::data-bucket/models/*"
    ]
    assert not _grants(stack, "ModelCompileRole", "s3:GetObject")
    assert "ModelCompileRoleArn" in stack.template["Outputs"]
    # AND with a model bucket, that bucket's models/ too
    other = _model_data_stack({"SageMakerModelBucket": "my-models"})
    assert _grants(other, "ModelCompileRole", "s3:PutObject") == [
        "arn:aws:s3:::data-bucket/models/*",
        "arn:aws:s3:::my-models/models/*",
    ]


def test_the_container_is_told_its_region(template: dict[str, Any]) -> None:
    # The serving container's Step Functions client (task heartbeats) is built for it.
    environment = props(template, "SageMakerModel")["PrimaryContainer"]["Environment"]
    assert environment["AWS_REGION"] == {"Ref": "AWS::Region"}


def test_no_scale_out_cooldown_ends_before_an_instance_can_have_started(
    template: dict[str, Any],
) -> None:
    # GIVEN the cold start the estimate assumes (data/throughput.json)
    from imagebatch.costs.estimate import load_speed_assumptions

    cold_start = float(load_speed_assumptions().sagemaker_cold_start_seconds.seconds)
    # THEN both scale-out policies wait for it plus one 60 s metric period: an instance still
    # starting adds no capacity to the metrics, and a shorter wait launches a second one
    wake = props(template, "SageMakerWakeFromZero")["StepScalingPolicyConfiguration"]
    tracking = props(template, "SageMakerBacklogScaling")[
        "TargetTrackingScalingPolicyConfiguration"
    ]
    assert wake["Cooldown"] == cold_start + 60
    assert tracking["ScaleOutCooldown"] == cold_start + 60
    assert props(template, "SageMakerBacklogWithoutCapacityAlarm")["Period"] == 60


def test_the_tracer_captures_no_responses(template: dict[str, Any]) -> None:
    # Return values can hold prompts and keys, and each is X-Ray metadata bytes billed.
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
