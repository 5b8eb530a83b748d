"""Least-privilege and wiring checks on template.yaml and the state machine definitions.

cfn-lint and `sam validate` check that the template is well formed; these tests check the
project's own rules, which no linter knows: explicit IAM actions, locked-down buckets, every
function on arm64/python3.12+/X-Ray with the domain layer, ASL placeholders that match the
template's substitutions, and no ASL feature that the local Step Functions engine (moto)
cannot run (docs/local-aws.md, "What moto does not check").
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_STATE_MACHINE = "AWS::Serverless::StateMachine"

# SAM policy templates whose actions were checked to be explicit (no "*" or "service:*") in
# samtranslator's policy_templates.json. Add one here only after reading its definition.
VETTED_POLICY_TEMPLATES = frozenset(
    {
        "LambdaInvokePolicy",
        "StepFunctionsExecutionPolicy",
        "SQSPollerPolicy",
        "SQSSendMessagePolicy",
        "SNSPublishMessagePolicy",
        "DynamoDBReadPolicy",
        "DynamoDBWritePolicy",
        "DynamoDBCrudPolicy",
        "S3ReadPolicy",
        "S3WritePolicy",
        "S3CrudPolicy",
        "EventBridgePutEventsPolicy",
    }
)
# AWS managed policies referenced by name or ARN that are narrow enough to allow.
VETTED_MANAGED_POLICIES = frozenset({"AWSXrayWriteOnlyAccess", "AWSLambdaBasicExecutionRole"})

PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


# --- loading -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode(str(TEMPLATE_PATH))
    assert not matches, f"template.yaml does not parse: {matches}"
    assert isinstance(decoded, dict)
    parsed: dict[str, Any] = decoded
    return parsed


def resources(template: dict[str, Any], *types: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if not types or resource.get("Type") in types
    }


def properties(resource: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = resource.get("Properties", {})
    return props


def function_globals(template: dict[str, Any]) -> dict[str, Any]:
    globals_: dict[str, Any] = template.get("Globals", {}).get("Function", {})
    return globals_


def effective(template: dict[str, Any], function: dict[str, Any], prop: str) -> Any:
    """A function property as SAM sees it: the function's own value, else the global one."""
    own = properties(function)
    if prop in own:
        return own[prop]
    return function_globals(template).get(prop)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = resources(template, SERVERLESS_FUNCTION)
    assert found, "template.yaml declares no AWS::Serverless::Function"
    return found


def state_machines(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = resources(template, SERVERLESS_STATE_MACHINE)
    assert found, "template.yaml declares no AWS::Serverless::StateMachine"
    return found


def load_asl(machine: dict[str, Any]) -> tuple[Path, str]:
    uri = properties(machine).get("DefinitionUri")
    assert isinstance(uri, str), "state machines keep their ASL in a file (DefinitionUri)"
    path = TEMPLATE_PATH.parent / uri
    assert path.is_file(), f"{uri} does not exist"
    return path, path.read_text(encoding="utf-8")


# --- IAM -----------------------------------------------------------------------------------


def iter_statements(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement anywhere under node, with a readable location."""
    if isinstance(node, dict):
        statements = node.get("Statement")
        candidates = as_list(statements)
        if candidates and all(isinstance(s, dict) and "Effect" in s for s in candidates):
            for index, statement in enumerate(candidates):
                yield f"{where}.Statement[{index}]", statement
        for key, value in node.items():
            if key != "Statement":
                yield from iter_statements(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from iter_statements(value, f"{where}[{index}]")


def all_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for name, resource in resources(template).items():
        found.extend(iter_statements(properties(resource), name))
    found.extend(iter_statements(template.get("Globals", {}), "Globals"))
    return found


def is_explicit_action(action: Any) -> bool:
    """service:Verb with no wildcard ("*", "s3:*", "s3:Get*" all fail; so does an intrinsic)."""
    return isinstance(action, str) and re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action) is not None


def test_template_has_iam_statements(template: dict[str, Any]) -> None:
    # Guards the walk below: if it found nothing, the other IAM tests would pass vacuously.
    assert all_statements(template)


def is_whole_service(action: Any) -> bool:
    return isinstance(action, str) and re.fullmatch(r"[a-z0-9-]+:\*", action) is not None


def test_no_wildcard_actions(template: dict[str, Any]) -> None:
    # A Deny may name a whole service ("s3:*": the TLS-only statements refuse everything);
    # an Allow names each action.
    bad = [
        f"{where}: Action {action!r}"
        for where, statement in all_statements(template)
        for action in as_list(statement.get("Action"))
        if not is_explicit_action(action)
        and not (statement.get("Effect") == "Deny" and is_whole_service(action))
    ]
    assert not bad, "IAM actions must be explicit:\n" + "\n".join(bad)


def test_every_statement_names_its_actions(template: dict[str, Any]) -> None:
    bad = [
        where
        for where, statement in all_statements(template)
        if not as_list(statement.get("Action")) or "NotAction" in statement
    ]
    assert not bad, "statements need an explicit Action list (no NotAction):\n" + "\n".join(bad)


def principal_is_everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    return isinstance(principal, dict) and "*" in as_list(principal.get("AWS"))


def test_only_deny_statements_name_every_principal(template: dict[str, Any]) -> None:
    bad = [
        where
        for where, statement in all_statements(template)
        if statement.get("Effect") != "Deny" and principal_is_everyone(statement.get("Principal"))
    ]
    assert not bad, "Principal '*' is only allowed in Deny statements:\n" + "\n".join(bad)


def policy_entries(template: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    kinds = (SERVERLESS_FUNCTION, SERVERLESS_STATE_MACHINE)
    for name, resource in resources(template, *kinds).items():
        for entry in as_list(properties(resource).get("Policies")):
            yield name, entry
    for entry in as_list(function_globals(template).get("Policies")):
        yield "Globals.Function", entry


def test_sam_policies_are_statements_or_vetted_templates(template: dict[str, Any]) -> None:
    bad: list[str] = []
    for name, entry in policy_entries(template):
        if isinstance(entry, str):
            if entry.rsplit("/", 1)[-1] not in VETTED_MANAGED_POLICIES:
                bad.append(f"{name}: managed policy {entry!r}")
        elif isinstance(entry, dict) and "Statement" not in entry:
            bad.extend(
                f"{name}: policy template {key!r}"
                for key in entry
                if key not in VETTED_POLICY_TEMPLATES
            )
        elif not isinstance(entry, dict):
            bad.append(f"{name}: policy {entry!r}")
    assert not bad, "write explicit statements, or vet the policy first:\n" + "\n".join(bad)


def test_iam_resources_use_no_broad_managed_policies(template: dict[str, Any]) -> None:
    bad = [
        f"{name}: {arn!r}"
        for name, resource in resources(template).items()
        if str(resource.get("Type", "")).startswith("AWS::IAM::")
        for arn in as_list(properties(resource).get("ManagedPolicyArns"))
        if not (isinstance(arn, str) and arn.rsplit("/", 1)[-1] in VETTED_MANAGED_POLICIES)
    ]
    assert not bad, "IAM resources may only attach vetted managed policies:\n" + "\n".join(bad)


# --- S3 ------------------------------------------------------------------------------------

PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "BlockPublicPolicy",
    "IgnorePublicAcls",
    "RestrictPublicBuckets",
)


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def buckets(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = resources(template, "AWS::S3::Bucket")
    assert found, "template.yaml declares no AWS::S3::Bucket"
    return found


def test_buckets_are_encrypted(template: dict[str, Any]) -> None:
    for name, bucket in buckets(template).items():
        encryption = properties(bucket).get("BucketEncryption", {})
        rules = as_list(encryption.get("ServerSideEncryptionConfiguration"))
        assert rules, f"{name}: no BucketEncryption"
        for rule in rules:
            algorithm = rule.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
            assert algorithm in {"AES256", "aws:kms", "aws:kms:dsse"}, f"{name}: {rule}"


def test_buckets_block_all_public_access(template: dict[str, Any]) -> None:
    for name, bucket in buckets(template).items():
        block = properties(bucket).get("PublicAccessBlockConfiguration", {})
        off = [flag for flag in PUBLIC_ACCESS_FLAGS if not is_true(block.get(flag))]
        assert not off, f"{name}: PublicAccessBlockConfiguration flags not true: {off}"


def denies_insecure_transport(statement: dict[str, Any]) -> bool:
    condition = statement.get("Condition", {})
    secure = condition.get("Bool", {}).get("aws:SecureTransport")
    return (
        statement.get("Effect") == "Deny"
        and principal_is_everyone(statement.get("Principal"))
        and is_false(secure)
    )


def policies_of_bucket(template: dict[str, Any], bucket: str) -> list[dict[str, Any]]:
    return [
        properties(policy).get("PolicyDocument", {})
        for policy in resources(template, "AWS::S3::BucketPolicy").values()
        if properties(policy).get("Bucket") == {"Ref": bucket}
    ]


def test_buckets_deny_insecure_transport(template: dict[str, Any]) -> None:
    for name in buckets(template):
        documents = policies_of_bucket(template, name)
        assert documents, f"{name}: no AWS::S3::BucketPolicy with Bucket: !Ref {name}"
        denials = [
            statement
            for document in documents
            for statement in as_list(document.get("Statement"))
            if denies_insecure_transport(statement)
        ]
        assert denials, f"{name}: no Deny of aws:SecureTransport false for Principal '*'"
        for statement in denials:
            covered = json.dumps(statement.get("Resource"))
            assert name in covered, f"{name}: the SecureTransport denial does not cover it"


# --- functions -----------------------------------------------------------------------------


def test_functions_run_on_arm64(template: dict[str, Any]) -> None:
    for name, function in functions(template).items():
        assert effective(template, function, "Architectures") == ["arm64"], name


def test_functions_run_python_3_12_or_later(template: dict[str, Any]) -> None:
    for name, function in functions(template).items():
        runtime = effective(template, function, "Runtime")
        match = re.fullmatch(r"python3\.(\d+)", str(runtime))
        assert match and int(match.group(1)) >= 12, f"{name}: runtime {runtime!r}"


def test_functions_trace_with_xray(template: dict[str, Any]) -> None:
    assert function_globals(template).get("Tracing") == "Active", "Globals.Function.Tracing"
    for name, function in functions(template).items():
        assert effective(template, function, "Tracing") == "Active", name


def test_functions_use_the_domain_layer(template: dict[str, Any]) -> None:
    layer = resources(template, "AWS::Serverless::LayerVersion").get("DomainLayer")
    assert layer is not None, "no AWS::Serverless::LayerVersion named DomainLayer"
    for name, function in functions(template).items():
        # SAM appends a function's own Layers to the global ones.
        layers = as_list(function_globals(template).get("Layers"))
        layers += as_list(properties(function).get("Layers"))
        assert {"Ref": "DomainLayer"} in layers, f"{name} does not use DomainLayer"


def names_per_stack(value: Any) -> bool:
    """A physical name must vary with the stack, so two stacks can live in one account."""
    text = json.dumps(value)
    return not isinstance(value, str) and ("AWS::StackName" in text or "AWS::StackId" in text)


@pytest.mark.parametrize(
    ("resource_type", "name_property"),
    [
        (SERVERLESS_FUNCTION, "FunctionName"),
        (SERVERLESS_STATE_MACHINE, "Name"),
        ("AWS::S3::Bucket", "BucketName"),
        ("AWS::DynamoDB::Table", "TableName"),
    ],
)
def test_no_hard_coded_physical_names(
    template: dict[str, Any], resource_type: str, name_property: str
) -> None:
    for name, resource in resources(template, resource_type).items():
        value = properties(resource).get(name_property)
        assert value is None or names_per_stack(value), f"{name}.{name_property} = {value!r}"


def handler_location(template: dict[str, Any], function: dict[str, Any]) -> tuple[Path, str]:
    code_uri = effective(template, function, "CodeUri")
    handler = effective(template, function, "Handler")
    assert isinstance(code_uri, str), f"CodeUri must be a local directory, got {code_uri!r}"
    assert isinstance(handler, str) and "." in handler, f"bad Handler {handler!r}"
    module, _, attribute = handler.rpartition(".")
    return TEMPLATE_PATH.parent / code_uri / (module.replace(".", "/") + ".py"), attribute


def defines(tree: ast.Module, attribute: str) -> bool:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == attribute:
            return True
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
            return True
    return False


def test_function_handlers_exist(template: dict[str, Any]) -> None:
    for name, function in functions(template).items():
        path, attribute = handler_location(template, function)
        assert path.name == "app.py", f"{name}: handler module is {path.name}, want app.py"
        assert path.is_file(), f"{name}: {path.relative_to(ROOT)} does not exist"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        assert defines(tree, attribute), f"{name}: {path.relative_to(ROOT)} has no {attribute}"


# --- state machines ------------------------------------------------------------------------


def test_substitutions_match_placeholders(template: dict[str, Any]) -> None:
    for name, machine in state_machines(template).items():
        path, text = load_asl(machine)
        placeholders = set(PLACEHOLDER.findall(text))
        substitutions = set(properties(machine).get("DefinitionSubstitutions", {}))
        assert placeholders - substitutions == set(), f"{name}: not substituted in {path.name}"
        assert substitutions - placeholders == set(), f"{name}: unused substitutions"


def walk_json(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk_json(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_json(value)


def test_state_machines_are_standard(template: dict[str, Any]) -> None:
    # EXPRESS cannot wait for task tokens (.waitForTaskToken), which SageMaker chunks need.
    for name, machine in state_machines(template).items():
        assert properties(machine).get("Type", "STANDARD") == "STANDARD", name


def test_asl_uses_only_features_the_local_engine_runs(template: dict[str, Any]) -> None:
    # docs/local-aws.md: moto cannot parse ItemBatcher and rejects JSONL input and EXPRESS
    # children; chunk at ingest instead, and run Distributed Map children as STANDARD.
    for machine in state_machines(template).values():
        path, text = load_asl(machine)
        for key, value in walk_json(json.loads(text)):
            assert key != "ItemBatcher", f"{path.name}: ItemBatcher"
            assert not (key == "ExecutionType" and value == "EXPRESS"), f"{path.name}: EXPRESS"
            assert not (key == "InputType" and value == "JSONL"), f"{path.name}: JSONL input"


def test_catalog_schedule_retries_and_has_a_dead_letter_queue(template: dict[str, Any]) -> None:
    function = template["Resources"]["CatalogFunction"]["Properties"]
    schedule = function["Events"]["Nightly"]
    assert schedule["Type"] == "ScheduleV2"
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "CatalogSchedule"}
    assert props["ScheduleExpressionTimezone"] == {"Ref": "CatalogScheduleTimezone"}
    assert props["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["CatalogScheduleDeadLetterQueue", "Arn"]}
    }
    queue = template["Resources"]["CatalogScheduleDeadLetterQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert props["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    # The scheduled time names the night, so a re-fired schedule renders the same manifest.
    assert json.loads(props["Input"]) == {"scheduled_time": "<aws.scheduler.scheduled-time>"}


def test_contact_sheet_runs_after_finalize_and_cannot_fail_the_batch() -> None:
    definition = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
    states = definition["States"]
    assert states["FinalizeBatch"]["Next"] == "BuildContactSheet"
    sheet = states["BuildContactSheet"]
    assert sheet["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    # the failed sheet's hold is written off (ContactSheetFailed), and that cannot fail either
    failed = states[sheet["Catch"][0]["Next"]]
    assert failed["Parameters"]["Payload"]["write_off"] is True
    assert failed["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    kept = states[failed["Catch"][0]["Next"]]
    assert (kept["Type"], kept["End"]) == ("Pass", True)


def test_a_failed_ingest_lands_in_a_dead_letter_queue_with_an_alarm(
    template: dict[str, Any],
) -> None:
    # S3 invokes ingest asynchronously: after Lambda's retries an event with no on-failure
    # destination is dropped, and the batch it carried is lost without a trace.
    ingest = properties(template["Resources"]["IngestFunction"])
    config = ingest.get("EventInvokeConfig")
    assert config is not None, "IngestFunction: no EventInvokeConfig"
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    queue_id = on_failure["Destination"]["Fn::GetAtt"][0]
    queue = template["Resources"][queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    # Kept long enough to replay after a weekend (SQS allows at most 14 days).
    assert properties(queue)["MessageRetentionPeriod"] >= 4 * 24 * 3600
    assert is_true(properties(queue).get("SqsManagedSseEnabled"))
    assert 0 <= config["MaximumRetryAttempts"] <= 2

    # AND an alarm fires on the first message in it, and tells someone
    alarms = [
        properties(alarm)
        for alarm in resources(template, "AWS::CloudWatch::Alarm").values()
        if properties(alarm).get("Namespace") == "AWS/SQS"
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}
        in properties(alarm).get("Dimensions", [])
    ]
    assert len(alarms) == 1, f"no alarm on {queue_id}"
    alarm = alarms[0]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1
    assert alarm.get("AlarmActions"), "the alarm notifies nobody"

    # AND the replay needs the queue and the function, which the outputs give
    outputs = template["Outputs"]
    assert outputs["IngestFailureQueueUrl"]["Value"] == {"Ref": queue_id}
    assert outputs["IngestFunctionName"]["Value"] == {"Ref": "IngestFunction"}


def test_the_packages_default_service_name_is_the_templates(template: dict[str, Any]) -> None:
    # child loggers bind to it at import (imagebatch/settings.py): the two must not drift
    from imagebatch.settings import SERVICE_NAME

    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAME
