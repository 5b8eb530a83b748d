"""Every function's log group is the stack's, with the LogRetentionDays parameter: none is
left for Lambda to make (it would never expire), and one exists only when its function does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode(str(TEMPLATE_PATH))
    assert not matches and isinstance(decoded, dict)
    parsed: dict[str, Any] = decoded
    return parsed


def _log_groups(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The log group of each function, by the function's logical id (from its /aws/lambda
    name)."""
    groups = {}
    for resource in template["Resources"].values():
        if resource.get("Type") != "AWS::Logs::LogGroup":
            continue
        name = resource.get("Properties", {}).get("LogGroupName")
        if isinstance(name, dict) and str(name.get("Fn::Sub", "")).startswith("/aws/lambda/${"):
            function = str(name["Fn::Sub"]).removeprefix("/aws/lambda/${").removesuffix("}")
            groups[function] = resource
    return groups


def test_every_function_has_a_log_group_with_the_retention_parameter(
    template: dict[str, Any],
) -> None:
    groups = _log_groups(template)
    functions = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }
    assert set(groups) == set(functions)
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        assert group.get("Condition") == functions[name].get("Condition"), name


def test_the_retention_parameter_takes_only_what_cloudwatch_logs_accepts(
    template: dict[str, Any],
) -> None:
    parameter = template["Parameters"]["LogRetentionDays"]
    assert parameter["Default"] in parameter["AllowedValues"]
    assert {1, 30, 365, 3653} <= set(parameter["AllowedValues"])
