"""The local IAM check expands template.yaml's roles as SAM does: compared, role by role and
statement by statement, with what aws-sam-translator makes of the same template.

aws-sam-translator pins a pydantic the project's venv cannot take, so it runs in the SAM CLI
venv (`make test` creates .venv-sam; IMAGEBATCH_SAM_PYTHON points at another one).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.iam_policies import Role, Statement, stack_roles
from imagebatch_local.cloud.local_stack import LocalStack, create_stack

REPO = Path(__file__).resolve().parents[2]
# an ECR image URI: the template reads the repository of its ECR grant from it
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imagebatch:1"

# Runs in the SAM venv: the template's IAM roles after SAM's transform, as JSON.
_TRANSLATE = r"""
import json, sys
from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

template = yaml_parse(open(sys.argv[1], encoding="utf-8").read())
for resource in template["Resources"].values():
    for key in ("CodeUri", "ContentUri", "DefinitionUri"):  # what `sam package` rewrites
        if key in resource.get("Properties", {}):
            resource["Properties"][key] = "s3://bucket/key"

class NoManagedPolicyNames:
    def load(self):
        return {}

output = transform(template, json.loads(sys.argv[2]), NoManagedPolicyNames())
roles = {}
for logical_id, resource in output["Resources"].items():
    if resource["Type"] != "AWS::IAM::Role":
        continue
    props = resource["Properties"]
    roles[logical_id] = {
        "condition": resource.get("Condition"),
        "managed": props.get("ManagedPolicyArns", []),
        "statements": [
            statement
            for policy in props.get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
        ],
    }
print(json.dumps(roles))
"""


def _sam_python() -> Path | None:
    configured = os.environ.get("IMAGEBATCH_SAM_PYTHON")
    candidate = Path(configured) if configured else REPO / ".venv-sam" / "bin" / "python"
    return candidate if candidate.exists() else None


def _translated(parameters: dict[str, str]) -> dict[str, Any]:
    python = _sam_python()
    if python is None:
        pytest.skip("no SAM CLI venv (make .venv-sam, or set IMAGEBATCH_SAM_PYTHON)")
    completed = subprocess.run(
        [str(python), "-c", _TRANSLATE, str(REPO / "template.yaml"), json.dumps(parameters)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    roles: dict[str, Any] = json.loads(completed.stdout)
    return roles


def _shape(statement: Statement) -> tuple[Any, ...]:
    return (
        statement.effect,
        tuple(sorted(statement.actions)),
        tuple(sorted(statement.not_actions)),
        tuple(sorted(statement.resources)),
        tuple(sorted(statement.not_resources)),
        json.dumps(statement.condition, sort_keys=True),
    )


def _owner(role_id: str, roles: dict[str, Role]) -> str:
    """SAM names a function's or state machine's role <LogicalId>Role; an IAM role is itself."""
    return role_id if role_id in roles else role_id.removesuffix("Role")


@pytest.mark.parametrize("sagemaker", ["false", "true"])
def test_roles_match_what_sam_generates(aws: None, sagemaker: str) -> None:
    parameters = {"EnableSageMaker": sagemaker, "SageMakerImageUri": IMAGE}
    translated = _translated(parameters)
    stack: LocalStack = create_stack(REPO / "template.yaml", None, parameter_overrides=parameters)
    ours = stack_roles(stack)

    expected = {
        _owner(role_id, ours): role
        for role_id, role in translated.items()
        if role["condition"] is None or stack.condition(role["condition"])
    }
    assert set(ours) == set(expected)
    for owner, role in expected.items():
        # SAM's statements, with intrinsics resolved as the local stack resolves them.
        # A conditional statement whose condition is false resolves to nothing (AWS::NoValue),
        # as resolving the whole list would drop it.
        resolved = stack.resolve(role["statements"])
        theirs = [_shape(Statement.parse(s, 0, "sam")) for s in resolved]
        inline = [_shape(s) for s in ours[owner].statements if not s.origin.startswith("managed:")]
        # IAM evaluates statements regardless of order: compare them as sets of statements.
        assert sorted(inline) == sorted(theirs), owner
        assert sorted(ours[owner].managed) == sorted(stack.resolve(role["managed"])), owner
