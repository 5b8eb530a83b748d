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

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from imagebatch_cli.local.stack import ACCOUNT_ID, REGION, LocalStack, load_template

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
STACK = "imagebatch"
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
    return f"{STACK}-{logical_id}", f"arn:aws:unknown:{REGION}:{ACCOUNT_ID}:{logical_id}"


@pytest.fixture(scope="module")
def stack() -> LocalStack:
    """The template with every optional part on (the SageMaker backend too)."""
    stack = LocalStack(STACK, TEMPLATE_PATH.parent, load_template(TEMPLATE_PATH))
    stack.parameter_defaults({"EnableSageMaker": "true", "SageMakerImageUri": "image"})
    # Buckets first: other names may be built from them.
    ordered = sorted(stack.resources.items(), key=lambda kv: kv[1]["Type"] != "AWS::S3::Bucket")
    for logical_id, resource in ordered:
        physical, arn = _arn_for(stack, logical_id, resource)
        stack.physical[logical_id] = physical
        stack.arns[logical_id] = arn
    return stack


@dataclass(frozen=True)
class Grant:
    actions: tuple[str, ...]
    resources: tuple[str, ...]


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
        grants.append(
            Grant(
                tuple(actions if isinstance(actions, list) else [actions]),
                tuple(resources if isinstance(resources, list) else [resources]),
            )
        )
    return grants


def arn_matches(pattern: str, arn: str) -> bool:
    """IAM's resource matching: '*' is any run of characters, '?' any one character."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(regex, arn) is not None


def allowed(grants: list[Grant], action: str, arn: str) -> bool:
    return any(
        action in grant.actions and any(arn_matches(pattern, arn) for pattern in grant.resources)
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
    # child executions when a failed batch execution is redriven
    assert allowed(grants, "states:StartExecution", machine_arn)
    assert allowed(grants, "states:DescribeExecution", execution)
    assert allowed(grants, "states:RedriveExecution", child)

    # AND nothing beyond it: no other state machine, no other states action
    other = machine_arn.replace(f":{name}", ":someone-elses")
    assert not allowed(grants, "states:StartExecution", other)
    assert not allowed(
        grants, "states:DescribeExecution", other.replace("stateMachine", "execution") + ":x"
    )
    documented = {"states:StartExecution", "states:DescribeExecution", "states:RedriveExecution"}
    granted = {action for grant in grants for action in grant.actions}
    assert granted == documented, f"states actions beyond the documented policy: {granted}"
