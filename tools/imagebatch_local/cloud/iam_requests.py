"""Which IAM action(s), on which resource ARN(s), an API call needs.

From the Service Authorization Reference ("Actions, resources, and condition keys for ..."),
for the operations the code and the local services make; an operation not listed here is
refused (PolicyError), so a new AWS call cannot pass unchecked. Where one call needs several
actions (a transaction's items, a copy's source and destination) each is its own request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from imagebatch_local.cloud.iam_policies import ContextValues, PolicyError


@dataclass(frozen=True)
class IamRequest:
    action: str
    resource: str
    context: ContextValues = field(default_factory=dict)


@dataclass(frozen=True)
class Where:
    """The account and region the calls are made in, and the stack's state machines (a
    task token names no resource: SendTask* is authorized on the token's state machine)."""

    region: str
    account: str
    state_machines: tuple[str, ...] = ()
    #: (application inference profile ARN, the foundation model id it copies)
    inference_profiles: tuple[tuple[str, str], ...] = ()


Params = Mapping[str, Any]

#: The Map Run label the local check gives a task token's child state machine (AWS's is the
#: Map state's Label or name and a suffix; a grant on <name>/* matches either).
LOCAL_MAP_RUN_LABEL = "GenerateChunks-local"
_Mapper = Callable[[str, Params, Where], list[IamRequest]]


def requests_for(service: str, operation: str, params: Params, where: Where) -> list[IamRequest]:
    mapper = _MAPPERS.get(service)
    if mapper is None:
        raise PolicyError(f"no IAM mapping for {service} calls (add it from the SAR)")
    return mapper(operation, params, where)


def _unknown(service: str, operation: str) -> PolicyError:
    return PolicyError(f"no IAM mapping for {service}.{operation} (add it from the SAR)")


# --- S3 -------------------------------------------------------------------------------------


def _s3_object(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _copy_source(value: Any) -> tuple[str, str, str | None]:
    if isinstance(value, Mapping):
        return value["Bucket"], value["Key"], value.get("VersionId")
    text = unquote(str(value)).lstrip("/")
    path, _, query = text.partition("?versionId=")
    bucket, _, key = path.partition("/")
    return bucket, key, query or None


def _s3_get(params: Params) -> list[IamRequest]:
    action = "s3:GetObjectVersion" if "VersionId" in params else "s3:GetObject"
    return [IamRequest(action, _s3_object(params["Bucket"], params["Key"]))]


def _s3_put(params: Params) -> list[IamRequest]:
    arn = _s3_object(params["Bucket"], params["Key"])
    requests = [IamRequest("s3:PutObject", arn)]
    if params.get("Tagging"):
        requests.append(IamRequest("s3:PutObjectTagging", arn))
    if params.get("ACL"):
        requests.append(IamRequest("s3:PutObjectAcl", arn))
    return requests


def _s3_copy(params: Params) -> list[IamRequest]:
    source_bucket, source_key, version = _copy_source(params["CopySource"])
    read = "s3:GetObjectVersion" if version else "s3:GetObject"
    return [
        IamRequest(read, _s3_object(source_bucket, source_key)),
        IamRequest("s3:PutObject", _s3_object(params["Bucket"], params["Key"])),
    ]


def _s3_delete(params: Params) -> list[IamRequest]:
    action = "s3:DeleteObjectVersion" if "VersionId" in params else "s3:DeleteObject"
    return [IamRequest(action, _s3_object(params["Bucket"], params["Key"]))]


def _s3_abort(params: Params) -> list[IamRequest]:
    return [IamRequest("s3:AbortMultipartUpload", _s3_object(params["Bucket"], params["Key"]))]


def _s3_list(params: Params) -> list[IamRequest]:
    context: dict[str, str | list[str]] = {}
    for name, key in (
        ("Prefix", "s3:prefix"),
        ("Delimiter", "s3:delimiter"),
        ("MaxKeys", "s3:max-keys"),
    ):
        if name in params:
            context[key] = str(params[name])
    return [IamRequest("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}", context)]


_S3: dict[str, Callable[[Params], list[IamRequest]]] = {
    "GetObject": _s3_get,
    "HeadObject": _s3_get,
    "PutObject": _s3_put,
    "CreateMultipartUpload": _s3_put,
    "UploadPart": _s3_put,
    "CompleteMultipartUpload": _s3_put,
    "CopyObject": _s3_copy,
    "DeleteObject": _s3_delete,
    "AbortMultipartUpload": _s3_abort,
    "ListObjectsV2": _s3_list,
    "ListObjects": _s3_list,
    "HeadBucket": lambda params: [IamRequest("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}")],
}


def _s3(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation not in _S3:
        raise _unknown("s3", operation)
    return _S3[operation](params)


# --- DynamoDB -------------------------------------------------------------------------------


def _table(name: str, where: Where) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:dynamodb:{where.region}:{where.account}:table/{name}"


_TRANSACT_WRITE = {
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
}
_SINGLE_TABLE = {
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "DescribeTable",
    "Query",
    "Scan",
}


def _dynamodb(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation in _SINGLE_TABLE:
        resource = _table(params["TableName"], where)
        if operation in {"Query", "Scan"} and params.get("IndexName"):
            resource = f"{resource}/index/{params['IndexName']}"
        return [IamRequest(f"dynamodb:{operation}", resource)]
    if operation in {"BatchGetItem", "BatchWriteItem"}:
        return [
            IamRequest(f"dynamodb:{operation}", _table(name, where))
            for name in params["RequestItems"]
        ]
    if operation == "TransactWriteItems":
        # Each item needs its own action on its table; there is no TransactWriteItems action
        # (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
        requests = []
        for item in params["TransactItems"]:
            ((kind, body),) = item.items()
            requests.append(IamRequest(_TRANSACT_WRITE[kind], _table(body["TableName"], where)))
        return requests
    if operation == "TransactGetItems":
        return [
            IamRequest("dynamodb:GetItem", _table(item["Get"]["TableName"], where))
            for item in params["TransactItems"]
        ]
    raise _unknown("dynamodb", operation)


# --- Step Functions, Lambda, Bedrock, SageMaker, SQS, SNS -------------------------------------


def _states(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation in {"StartExecution", "DescribeStateMachine", "ListExecutions"}:
        return [IamRequest(f"states:{operation}", params["stateMachineArn"])]
    if operation in {"DescribeExecution", "StopExecution", "GetExecutionHistory"}:
        return [IamRequest(f"states:{operation}", params["executionArn"])]
    if operation in {"SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat"}:
        # The SAR lists no resource type for these, yet AWS authorizes them against the state
        # machine that issued the token: its AccessDenied names "resource: arn:...:stateMachine:
        # <name>", and a grant on that ARN works (aws/aws-cdk#8486 review; NOAA-OWP/hydrovis#837).
        # Every token here is issued inside the batch's Distributed Map, by a child execution
        # whose state machine is <name>/<mapRunLabel> (Map Run docs). Which of the two ARNs AWS
        # checks is not documented, so the local check demands a grant on both.
        if len(where.state_machines) != 1:
            raise PolicyError(f"states:{operation}: cannot tell which state machine's token")
        machine = where.state_machines[0]
        return [
            IamRequest(f"states:{operation}", machine),
            IamRequest(f"states:{operation}", f"{machine}/{LOCAL_MAP_RUN_LABEL}"),
        ]
    raise _unknown("stepfunctions", operation)


def _function_arn(name: str, qualifier: str | None, where: Where) -> str:
    if name.startswith("arn:"):
        arn = name
    elif ":function:" in name:  # a partial ARN: 123456789012:function:name
        arn = f"arn:aws:lambda:{where.region}:{name}"
    else:
        arn = f"arn:aws:lambda:{where.region}:{where.account}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def _lambda(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation in {"Invoke", "InvokeAsync"}:
        arn = _function_arn(params["FunctionName"], params.get("Qualifier"), where)
        return [IamRequest("lambda:InvokeFunction", arn)]
    raise _unknown("lambda", operation)


#: Geography prefixes of cross-Region inference profile ids (us.anthropic...).
_PROFILE_PREFIXES = {"us", "eu", "apac", "jp", "au", "ca", "us-gov", "global"}


def _bedrock_runtime(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation not in {"InvokeModel", "InvokeModelWithResponseStream"}:
        raise _unknown("bedrock-runtime", operation)
    model = str(params["modelId"])
    copied = dict(where.inference_profiles).get(model)
    if copied is not None:
        # AWS authorizes a call through an application inference profile on the profile and
        # on the foundation model it copies (Bedrock user guide, inference profile
        # prerequisites); the model first, so a denial names it as for a bare model id.
        foundation = f"arn:aws:bedrock:{where.region}::foundation-model/{copied}"
        return [
            IamRequest(f"bedrock:{operation}", foundation),
            IamRequest(f"bedrock:{operation}", model),
        ]
    if model.startswith("arn:"):
        resource = model
    elif model.split(".", 1)[0] in _PROFILE_PREFIXES:
        resource = f"arn:aws:bedrock:{where.region}:{where.account}:inference-profile/{model}"
    else:
        resource = f"arn:aws:bedrock:{where.region}::foundation-model/{model}"
    return [IamRequest(f"bedrock:{operation}", resource)]


def _sagemaker_runtime(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation not in {"InvokeEndpoint", "InvokeEndpointAsync"}:
        raise _unknown("sagemaker-runtime", operation)
    # SageMaker ARNs carry resource names in lower case.
    name = str(params["EndpointName"]).lower()
    arn = f"arn:aws:sagemaker:{where.region}:{where.account}:endpoint/{name}"
    return [IamRequest(f"sagemaker:{operation}", arn)]


def _sagemaker(operation: str, params: Params, where: Where) -> list[IamRequest]:
    """The control plane: only what the endpoint observer reads."""
    if operation != "DescribeEndpoint":
        raise _unknown("sagemaker", operation)
    name = str(params["EndpointName"]).lower()
    arn = f"arn:aws:sagemaker:{where.region}:{where.account}:endpoint/{name}"
    return [IamRequest(f"sagemaker:{operation}", arn)]


def _queue_arn(params: Params, where: Where) -> str:
    if "QueueUrl" in params:
        parts = urlsplit(params["QueueUrl"]).path.strip("/").split("/")
        account, name = (parts[-2], parts[-1]) if len(parts) >= 2 else (where.account, parts[-1])
    else:
        account, name = params.get("QueueOwnerAWSAccountId", where.account), params["QueueName"]
    return f"arn:aws:sqs:{where.region}:{account}:{name}"


_SQS = {
    "ReceiveMessage": "sqs:ReceiveMessage",
    "DeleteMessage": "sqs:DeleteMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "SendMessage": "sqs:SendMessage",
    "SendMessageBatch": "sqs:SendMessage",
    "GetQueueAttributes": "sqs:GetQueueAttributes",
    "GetQueueUrl": "sqs:GetQueueUrl",
    "ChangeMessageVisibility": "sqs:ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}


def _sqs(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation not in _SQS:
        raise _unknown("sqs", operation)
    return [IamRequest(_SQS[operation], _queue_arn(params, where))]


def _sns(operation: str, params: Params, where: Where) -> list[IamRequest]:
    if operation == "Publish":
        return [IamRequest("sns:Publish", params.get("TopicArn") or params["TargetArn"])]
    raise _unknown("sns", operation)


def _events(operation: str, params: Params, where: Where) -> list[IamRequest]:
    """PutEvents is authorized per entry on its event bus, with the entry's source and
    detail type as condition keys (events:source, events:detail-type)."""
    if operation != "PutEvents":
        raise _unknown("events", operation)
    requests = []
    for entry in params.get("Entries", []):
        bus = str(entry.get("EventBusName") or "default")
        arn = (
            bus
            if bus.startswith("arn:")
            else (f"arn:aws:events:{where.region}:{where.account}:event-bus/{bus}")
        )
        context = {"events:source": str(entry.get("Source", ""))}
        if "DetailType" in entry:
            context["events:detail-type"] = str(entry["DetailType"])
        requests.append(IamRequest("events:PutEvents", arn, context))
    return requests


def _iam(operation: str, params: Params, where: Where) -> list[IamRequest]:
    """The query function's tenancy lookups: the caller's role or user (no path known)."""
    if operation == "ListRoleTags":
        return [
            IamRequest(
                "iam:ListRoleTags", f"arn:aws:iam::{where.account}:role/{params['RoleName']}"
            )
        ]
    if operation == "ListUserTags":
        return [
            IamRequest(
                "iam:ListUserTags", f"arn:aws:iam::{where.account}:user/{params['UserName']}"
            )
        ]
    raise _unknown("iam", operation)


_MAPPERS: dict[str, _Mapper] = {
    "iam": _iam,
    "events": _events,
    "s3": _s3,
    "dynamodb": _dynamodb,
    "stepfunctions": _states,
    "lambda": _lambda,
    "bedrock-runtime": _bedrock_runtime,
    "sagemaker-runtime": _sagemaker_runtime,
    "sagemaker": _sagemaker,
    "sqs": _sqs,
    "sns": _sns,
}
