"""Creates the resources of template.yaml in the local AWS - never a hand-kept copy.

SAM's transform and CloudFormation do not run offline, so the template is read and its
intrinsics resolved here (imagebatch_local.template), and each resource the pipeline uses is
created with boto3 against the moto server (docs/local-aws.md).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from imagebatch_local.cloud.lambda_runtime import FunctionSpec
from imagebatch_local.template import (
    ACCOUNT_ID,
    REGION,
    SUB_VARIABLE,
    StackTemplate,
    TemplateError,
    load_template,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import CreateTableInputTypeDef

# Resource types the local pipeline has no use for (permissions, policies: the IAM check
# evaluates them from the template, iam_resource_policies.py; the layer, and the
# endpoint's autoscaling: the local async endpoint runs one instance that starts on demand).
# The HTTP API is not emulated: the CLI calls the query handler with API Gateway events, so
# its access-log group has nothing to receive either.
NOT_EMULATED = {
    "AWS::Logs::LogGroup",
    "AWS::S3::BucketPolicy",
    "AWS::Serverless::LayerVersion",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    "AWS::Serverless::HttpApi",
    # read by _collect_sqs_events: the local Lambda runtime polls the queue itself
    "AWS::Lambda::EventSourceMapping",
}


@dataclass
class LocalStack(StackTemplate):
    """The physical names and ARNs of the template's resources, as created locally."""

    functions: list[FunctionSpec] = field(default_factory=list)
    #: Resolved properties of the SageMaker Model/EndpointConfig/Endpoint (the local endpoint
    #: serves them), by logical id.
    sagemaker: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Bedrock application inference profiles: ARN -> the foundation model id it copies.
    inference_profiles: dict[str, str] = field(default_factory=dict)
    #: (function name, queue URL, batch size, reports batch item failures) per SQS event.
    sqs_sources: list[tuple[str, str, int, bool]] = field(default_factory=list)


Resource = dict[str, Any]


@dataclass(frozen=True)
class LocalAccount:
    """Where the creators below create: moto's clients by service name, and the one role
    every resource is given (IAM grants nothing locally)."""

    clients: dict[str, Any]
    role_arn: str


#: Creates one resource of the template (logical id, its definition) in the local AWS.
Creator = Callable[[LocalStack, str, Resource, LocalAccount], None]


def _dummy_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README", "handlers run in-process from the template's CodeUri")
    return buffer.getvalue()


def create_stack(
    template_path: Path,
    endpoint: str | None,
    *,
    stack_name: str = "imagebatch-local",
    parameter_overrides: dict[str, str] | None = None,
    region: str = REGION,
) -> LocalStack:
    """The template's resources in `region` (endpoint None: wherever boto3 is pointed, e.g.
    moto's in-process mock)."""
    stack = LocalStack(stack_name, template_path.parent, load_template(template_path), region)
    stack.parameter_defaults(parameter_overrides or {})
    session = boto3.Session(region_name=region)
    # Typed as Any: the creators below each use the one client their resource needs.
    clients: dict[str, Any] = {
        name: session.client(name, endpoint_url=endpoint)
        for name in (
            "s3",
            "dynamodb",
            "lambda",
            "iam",
            "stepfunctions",
            "scheduler",
            "sns",
            "sqs",
            "events",
        )
    }
    unknown = {
        v["Type"]
        for v in stack.resources.values()
        if v["Type"] not in _CREATORS and v["Type"] not in NOT_EMULATED
    }
    if unknown:
        raise TemplateError(f"the local AWS cannot create {sorted(unknown)}")
    role_arn = clients["iam"].create_role(
        RoleName=f"{stack_name}-local",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    account = LocalAccount(clients, role_arn)
    # Order matters: environments refer to the table, the state machine to the functions.
    for resource_type, creator in _CREATORS.items():
        for logical_id, resource in stack.of_type(resource_type).items():
            creator(stack, logical_id, resource, account)
        if resource_type == "AWS::Serverless::Function":
            _create_functions(stack, account)
    _wire_s3_events(stack, clients["s3"])
    _create_schedules(stack, account)
    _collect_sqs_events(stack, clients["sqs"])
    return stack


def _create_bucket(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    props = resource.get("Properties", {})
    name = stack.resolve(props.get("BucketName")) or f"{stack.name}-{logical_id}".lower()
    if stack.region == "us-east-1":
        account.clients["s3"].create_bucket(Bucket=name)
    else:
        # Outside us-east-1 S3 refuses a CreateBucket without the region's LocationConstraint.
        account.clients["s3"].create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": stack.region}
        )
    if "BucketEncryption" in props:
        # CloudFormation says ServerSideEncryptionByDefault where the S3 API says Apply...
        rules = [
            {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                "BucketKeyEnabled": rule.get("BucketKeyEnabled", False),
            }
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        account.clients["s3"].put_bucket_encryption(
            Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules}
        )
    versioning = props.get("VersioningConfiguration")
    if versioning:
        # Each S3 event then names its object's version, the one ingest reads (with
        # s3:GetObjectVersion), not the key's latest.
        account.clients["s3"].put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": versioning["Status"]}
        )
    stack.physical[logical_id] = name
    stack.arns[logical_id] = f"arn:aws:s3:::{name}"


def _create_table(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    props = stack.resolve(resource.get("Properties", {}))
    name = props.get("TableName") or f"{stack.name}-{logical_id}"
    request: CreateTableInputTypeDef = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        request["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    account.clients["dynamodb"].create_table(**request)
    stack.physical[logical_id] = name
    stack.arns[logical_id] = f"arn:aws:dynamodb:{stack.region}:{ACCOUNT_ID}:table/{name}"


def _name_function(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    # Named before any is created: environments refer to functions and vice versa.
    name = f"{stack.name}-{logical_id}"
    stack.physical[logical_id] = name
    stack.arns[logical_id] = f"arn:aws:lambda:{stack.region}:{ACCOUNT_ID}:function:{name}"
    _name_generated_role(stack, logical_id)


def _name_generated_role(stack: LocalStack, owner: str) -> None:
    """The role SAM generates for a function or state machine, logical id <owner>Role (a
    template may !GetAtt it); named as iam_policies.stack_roles names it."""
    stack.arns[f"{owner}Role"] = f"arn:aws:iam::{ACCOUNT_ID}:role/{stack.name}-{owner}Role"


def _create_functions(stack: LocalStack, account: LocalAccount) -> None:
    defaults = stack.function_globals()
    for logical_id, resource in stack.of_type("AWS::Serverless::Function").items():
        props = resource.get("Properties", {})
        environment = {
            **stack.resolve(defaults.get("Environment", {}).get("Variables", {})),
            **stack.resolve(props.get("Environment", {}).get("Variables", {})),
        }
        timeout = int(stack.resolve(props.get("Timeout", defaults.get("Timeout", 3))))
        memory = int(stack.resolve(props.get("MemorySize", defaults.get("MemorySize", 128))))
        name = stack.physical[logical_id]
        account.clients["lambda"].create_function(
            FunctionName=name,
            Runtime=props.get("Runtime", defaults.get("Runtime", "python3.12")),
            Role=account.role_arn,
            Handler=props.get("Handler", defaults.get("Handler")),
            Code={"ZipFile": _dummy_zip()},
            Timeout=timeout,
            MemorySize=memory,
            Environment={"Variables": {k: str(v) for k, v in environment.items()}},
        )
        stack.functions.append(
            FunctionSpec(
                logical_id=logical_id,
                name=name,
                arn=stack.arns[logical_id],
                code_dir=stack.template_dir / props["CodeUri"],
                handler=props.get("Handler", defaults.get("Handler")),
                memory_mb=memory,
                timeout_s=timeout,
                environment={k: str(v) for k, v in environment.items()},
                **_event_invoke_config(stack, props),
            )
        )


def _event_invoke_config(stack: LocalStack, props: Resource) -> dict[str, Any]:
    """A function's EventInvokeConfig as FunctionSpec fields: its retries of an asynchronous
    invocation, and its SQS on-failure destination's ARN (the local runtime rehearses no
    other destination type, nor MaximumEventAgeInSeconds: events here are never queued)."""
    config = props.get("EventInvokeConfig", {})
    found: dict[str, Any] = {}
    if "MaximumRetryAttempts" in config:
        found["async_retries"] = int(stack.resolve(config["MaximumRetryAttempts"]))
    on_failure = config.get("DestinationConfig", {}).get("OnFailure", {})
    if on_failure:
        if on_failure.get("Type") != "SQS":
            raise TemplateError(f"the local AWS sends on-failure records to SQS only: {on_failure}")
        found["on_failure"] = str(stack.resolve(on_failure["Destination"]))
    return found


def _create_state_machine(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    props = resource.get("Properties", {})
    _name_generated_role(stack, logical_id)
    definition = (stack.template_dir / props["DefinitionUri"]).read_text(encoding="utf-8")
    for key, value in stack.resolve(props.get("DefinitionSubstitutions", {})).items():
        definition = definition.replace(f"${{{key}}}", str(value))
    leftover = SUB_VARIABLE.findall(definition)
    if leftover:
        raise TemplateError(f"{props['DefinitionUri']}: no substitution for {leftover}")
    name = stack.resolve(props.get("Name")) or f"{stack.name}-{logical_id}"
    arn = account.clients["stepfunctions"].create_state_machine(
        name=name,
        definition=definition,
        roleArn=account.role_arn,
        type=props.get("Type", "STANDARD"),
    )["stateMachineArn"]
    stack.physical[logical_id] = arn
    stack.arns[logical_id] = arn


def _wire_s3_events(stack: LocalStack, s3: Any) -> None:
    """SAM turns a function's S3 events into the bucket's notification configuration."""
    by_bucket: dict[str, list[dict[str, Any]]] = {}
    for logical_id, resource in stack.of_type("AWS::Serverless::Function").items():
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event["Type"] != "S3":
                continue
            props = event["Properties"]
            events = props["Events"] if isinstance(props["Events"], list) else [props["Events"]]
            config: dict[str, Any] = {
                "LambdaFunctionArn": stack.arns[logical_id],
                "Events": events,
            }
            if "Filter" in props:
                config["Filter"] = {"Key": {"FilterRules": props["Filter"]["S3Key"]["Rules"]}}
            by_bucket.setdefault(stack.resolve(props["Bucket"]), []).append(config)
    for bucket, configs in by_bucket.items():
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={"LambdaFunctionConfigurations": configs},
        )


def _create_schedules(stack: LocalStack, account: LocalAccount) -> None:
    """SAM turns a function's ScheduleV2 event into a Scheduler schedule (and its DLQ).

    moto stores the schedule but never fires it: `imagebatch local catalog` reads it back
    and delivers its Input, as the Scheduler would, once.
    """
    for logical_id, resource in stack.of_type("AWS::Serverless::Function").items():
        for event_id, event in resource.get("Properties", {}).get("Events", {}).items():
            if event["Type"] != "ScheduleV2":
                continue
            props = stack.resolve(event["Properties"])
            name = f"{stack.name}-{logical_id}{event_id}"
            target: dict[str, Any] = {"Arn": stack.arns[logical_id], "RoleArn": account.role_arn}
            for key in ("Input", "RetryPolicy"):
                if key in props:
                    target[key] = props[key]
            if props.get("DeadLetterConfig", {}).get("Type") == "SQS":
                queue_url = account.clients["sqs"].create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
                queue_arn = account.clients["sqs"].get_queue_attributes(
                    QueueUrl=queue_url, AttributeNames=["QueueArn"]
                )["Attributes"]["QueueArn"]
                target["DeadLetterConfig"] = {"Arn": queue_arn}
                # SAM's name for the queue it generates (its role's SendMessage grant).
                stack.arns[f"{logical_id}{event_id}Queue"] = queue_arn
            account.clients["scheduler"].create_schedule(
                Name=name,
                ScheduleExpression=props["ScheduleExpression"],
                ScheduleExpressionTimezone=props.get("ScheduleExpressionTimezone", "UTC"),
                FlexibleTimeWindow=props.get("FlexibleTimeWindow", {"Mode": "OFF"}),
                State=props.get("State", "ENABLED"),
                Target=target,
            )
            stack.physical[f"{logical_id}{event_id}"] = name


def _create_topic(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    props = stack.resolve(resource.get("Properties", {}))
    name = props.get("TopicName") or f"{stack.name}-{logical_id}"
    arn = account.clients["sns"].create_topic(Name=name)["TopicArn"]
    # !Ref of a topic is its ARN.
    stack.physical[logical_id] = arn
    stack.arns[logical_id] = arn
    stack.attributes[(logical_id, "TopicName")] = name


def _create_event_bus(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    # The bus's Policy is not applied: moto keeps a bus policy but never evaluates it (the
    # local IAM check evaluates identity policies).
    name = str(stack.resolve(resource["Properties"]["Name"]))
    arn = account.clients["events"].create_event_bus(Name=name)["EventBusArn"]
    # !Ref of a bus is its name.
    stack.physical[logical_id] = name
    stack.arns[logical_id] = arn
    stack.attributes[(logical_id, "Name")] = name


def _create_queue(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    props = stack.resolve(resource.get("Properties", {}))
    name = props.get("QueueName") or f"{stack.name}-{logical_id}"
    attributes = {
        key: json.dumps(value) if isinstance(value, dict) else str(value)
        for key, value in props.items()
        if key in {"VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy"}
    }
    url = account.clients["sqs"].create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    # !Ref of a queue is its URL.
    stack.physical[logical_id] = url
    stack.arns[logical_id] = f"arn:aws:sqs:{stack.region}:{ACCOUNT_ID}:{name}"
    stack.attributes[(logical_id, "QueueName")] = name
    stack.attributes[(logical_id, "QueueUrl")] = url


def _create_subscription(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    props = stack.resolve(resource.get("Properties", {}))
    attributes = {"RawMessageDelivery": "true"} if props.get("RawMessageDelivery") else {}
    arn = account.clients["sns"].subscribe(
        TopicArn=props["TopicArn"],
        Protocol=props["Protocol"],
        Endpoint=props["Endpoint"],
        Attributes=attributes,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    stack.physical[logical_id] = arn


def _name_role(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    # Roles grant nothing locally; only their ARN is referred to (the SageMaker model's).
    stack.physical[logical_id] = f"{stack.name}-{logical_id}"
    stack.arns[logical_id] = f"arn:aws:iam::{ACCOUNT_ID}:role/{stack.name}-{logical_id}"


def _record_sagemaker(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    """Model, EndpointConfig and Endpoint: kept resolved for the local async endpoint."""
    props = stack.resolve(resource.get("Properties", {}))
    kind = resource["Type"].rsplit("::", 1)[-1]
    name = props.get(f"{kind}Name") or f"{stack.name}-{logical_id}"
    stack.physical[logical_id] = name
    stack.attributes[(logical_id, f"{kind}Name")] = name
    stack.arns[logical_id] = (
        f"arn:aws:sagemaker:{stack.region}:{ACCOUNT_ID}:{kind.lower()}/{name.lower()}"
    )
    stack.sagemaker[logical_id] = {"Type": resource["Type"], "Name": name, **props}


def _record_inference_profile(
    stack: LocalStack, logical_id: str, resource: Resource, account: LocalAccount
) -> None:
    """moto has no Bedrock control plane: the profile gets an ARN of AWS's form (a 12-char
    id, stable per stack and logical id) and the local Bedrock is told which model it copies
    (pipeline.py), so the profile ARN works as a modelId as on AWS."""
    props = stack.resolve(resource.get("Properties", {}))
    source = str(props["ModelSource"]["CopyFrom"])
    model_id = source.rsplit("foundation-model/", 1)[-1]
    profile_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{stack.name}/{logical_id}").hex[:12]
    arn = f"arn:aws:bedrock:{stack.region}:{ACCOUNT_ID}:application-inference-profile/{profile_id}"
    stack.physical[logical_id] = arn
    stack.arns[logical_id] = arn
    stack.attributes[(logical_id, "InferenceProfileArn")] = arn
    stack.attributes[(logical_id, "InferenceProfileId")] = profile_id
    stack.inference_profiles[arn] = model_id


def _collect_sqs_events(stack: LocalStack, sqs: Any) -> None:
    """SAM turns a function's SQS events into event source mappings, and the template may
    declare AWS::Lambda::EventSourceMapping itself; the local Lambda runtime polls them
    (event_sources.py), so only their settings are kept here."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for logical_id, resource in stack.of_type("AWS::Serverless::Function").items():
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event["Type"] == "SQS":
                props = stack.resolve(event["Properties"])
                found.append((stack.physical[logical_id], props["Queue"], props))
    for resource in stack.of_type("AWS::Lambda::EventSourceMapping").values():
        props = stack.resolve(resource["Properties"])
        if ":sqs:" in str(props["EventSourceArn"]):
            found.append((str(props["FunctionName"]), props["EventSourceArn"], props))
    for function_name, queue_arn, props in found:
        url = sqs.get_queue_url(QueueName=str(queue_arn).rsplit(":", 1)[-1])["QueueUrl"]
        stack.sqs_sources.append(
            (
                function_name,
                url,
                int(props.get("BatchSize", 10)),
                "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            )
        )


_CREATORS: dict[str, Creator] = {
    "AWS::S3::Bucket": _create_bucket,
    "AWS::DynamoDB::Table": _create_table,
    "AWS::SNS::Topic": _create_topic,
    "AWS::SQS::Queue": _create_queue,
    "AWS::SNS::Subscription": _create_subscription,
    "AWS::Events::EventBus": _create_event_bus,
    "AWS::IAM::Role": _name_role,
    # before the functions, whose environment names the profiles' ARNs
    "AWS::Bedrock::ApplicationInferenceProfile": _record_inference_profile,
    "AWS::Serverless::Function": _name_function,
    "AWS::Serverless::StateMachine": _create_state_machine,
    "AWS::SageMaker::Model": _record_sagemaker,
    "AWS::SageMaker::EndpointConfig": _record_sagemaker,
    "AWS::SageMaker::Endpoint": _record_sagemaker,
}
