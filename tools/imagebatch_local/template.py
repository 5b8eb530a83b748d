"""template.yaml as one stack sees it: parameters, conditions and intrinsics resolved as
CloudFormation would, in the local account.

SAM's transform and CloudFormation do not run offline, so the template is read itself
(cfn-lint's decoder understands !Ref, !GetAtt and !Sub). The local AWS creates its resources
from this (cloud/local_stack.py); `imagebatch validate` and `estimate` read the ingest
function's environment from it (imagebatch_cli.template_preview) without starting the local
AWS, which is why it stands outside cloud/ and imports nothing of moto or boto3.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"
# The region a local AWS plays unless told otherwise (`imagebatch local run --region`): the
# one samconfig.toml deploys to, so the local AWS rehearses that stack (its prices, and the
# models Bedrock serves there).
REGION = "us-west-2"
# Stands for !Ref AWS::NoValue while resolving; dropped from the lists and maps holding it.
_NO_VALUE = object()
# A ${Name} in !Sub text; the state machine's DefinitionSubstitutions use the same form.
SUB_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_:.]+)\}")


class TemplateError(Exception):
    pass


def load_template(path: Path) -> dict[str, Any]:
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    if template is None:
        raise TemplateError(f"{path}: " + "; ".join(str(m) for m in matches))
    return dict(template)


@dataclass
class StackTemplate:
    """A template deployed as the stack `name`: what its intrinsics resolve to, given the
    parameters and the physical names and ARNs known so far."""

    name: str
    template_dir: Path
    template: dict[str, Any]
    region: str = REGION
    parameters: dict[str, str] = field(default_factory=dict)
    physical: dict[str, str] = field(default_factory=dict)
    arns: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Any]:
        """The resources this stack creates: those whose Condition holds."""
        return {
            k: v
            for k, v in self.template["Resources"].items()
            if "Condition" not in v or self.condition(v["Condition"])
        }

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions", {})
        if name not in conditions:
            raise TemplateError(f"no condition {name}")
        return self._evaluate(conditions[name])

    def _evaluate(self, expression: Any) -> bool:
        ((key, arg),) = expression.items()
        if key == "Fn::Equals":
            left, right = (self.resolve(v) for v in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self._evaluate(arg[0])
        if key == "Fn::And":
            return all(self._evaluate(v) for v in arg)
        if key == "Fn::Or":
            return any(self._evaluate(v) for v in arg)
        if key == "Condition":
            return self.condition(arg)
        raise TemplateError(f"condition function {key} is not known locally")

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def pseudo(self, name: str) -> str:
        # A stack id as CloudFormation forms it; the UUID is stable per stack name locally.
        stack_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"imagebatch-local/{self.name}")
        values = {
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": self.region,
            "AWS::StackName": self.name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/{self.name}/{stack_uuid}"
            ),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        return values[name]

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name]
        raise TemplateError(f"!Ref {name}: not a parameter or a created resource")

    def get_att(self, name: str, attribute: str) -> str:
        if attribute == "Arn" and name in self.arns:
            return self.arns[name]
        if (name, attribute) in self.attributes:
            return self.attributes[(name, attribute)]
        raise TemplateError(f"!GetAtt {name}.{attribute} is not known locally")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            intrinsic = self._intrinsics().get(key)
            if intrinsic is not None:
                return intrinsic(arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _intrinsics(self) -> dict[str, Any]:
        return {
            "Ref": self.ref,
            "Fn::GetAtt": lambda arg: self.get_att(
                *(arg if isinstance(arg, list) else arg.split(".", 1))
            ),
            "Fn::Sub": self._sub,
            "Fn::Join": lambda arg: str(arg[0]).join(str(self.resolve(v)) for v in arg[1]),
            "Fn::Split": lambda arg: str(self.resolve(arg[1])).split(str(arg[0])),
            "Fn::Select": lambda arg: self.resolve(arg[1])[int(self.resolve(arg[0]))],
            "Fn::If": lambda arg: self.resolve(arg[1] if self.condition(arg[0]) else arg[2]),
        }

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in variables:
                return str(self.resolve(variables[token]))
            if "." in token and not token.startswith("AWS::"):
                return self.get_att(*token.split(".", 1))
            return str(self.ref(token))

        return SUB_VARIABLE.sub(replace, text)

    def parameter_defaults(self, overrides: dict[str, str]) -> None:
        for name, spec in self.template.get("Parameters", {}).items():
            self.parameters[name] = str(overrides.get(name, spec.get("Default", "")))

    def function_globals(self) -> dict[str, Any]:
        return dict(self.template.get("Globals", {}).get("Function", {}))
