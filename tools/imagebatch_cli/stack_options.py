"""The stack a manifest would land on, from template.yaml and the parameters it was deployed
with: the ingest function's environment resolved as CloudFormation would, read by the same
settings model and `StackOptions.from_settings` as the deployed ingest function.

`validate` and `estimate` then run `pipeline.ingest.plan_for_stack` on it, so what they show
is what ingest would do, not a second reading of the rules.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from imagebatch.pipeline.ingest import StackOptions
from imagebatch.settings import IngestSettings

STACK_NAME = "imagebatch"
INGEST_FUNCTION = "IngestFunction"


class StackParametersError(ValueError):
    pass


def parse_parameter_overrides(texts: list[str]) -> dict[str, str]:
    """`Key=Value` pairs, as `sam deploy --parameter-overrides` takes them (space-separated
    in one string, or one per option)."""
    parameters = {}
    for text in texts:
        for pair in shlex.split(text):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise StackParametersError(f"{pair!r} is not Key=Value")
            parameters[key] = value
    return parameters


def ingest_settings(template: Path, parameters: dict[str, str], region: str) -> IngestSettings:
    """The ingest function's settings on a stack deployed from `template` with `parameters`."""
    from imagebatch_cli.local.cloud.stack import LocalStack, TemplateError, load_template

    stack = LocalStack(STACK_NAME, template.parent, load_template(template))
    unknown = sorted(set(parameters) - set(stack.template.get("Parameters", {})))
    if unknown:
        raise StackParametersError(f"{template} has no parameter(s) {', '.join(unknown)}")
    stack.parameter_defaults(parameters)
    # Names of resources stand in for their physical ids: only the SageMaker and chunking
    # settings matter here, and those come from parameters.
    stack.physical = {logical_id: f"{STACK_NAME}-{logical_id}" for logical_id in stack.resources}
    function = stack.template["Resources"][INGEST_FUNCTION]["Properties"]
    try:
        environment = {
            **stack.resolve(stack.function_globals().get("Environment", {}).get("Variables", {})),
            **stack.resolve(function.get("Environment", {}).get("Variables", {})),
        }
    except TemplateError as exc:
        raise StackParametersError(f"{template}: {exc}") from exc
    environment = {key: str(value) for key, value in environment.items()} | {"AWS_REGION": region}
    return IngestSettings.from_env(environment)


def stack_options(
    template: Path | None, parameters: dict[str, str], region: str = "us-east-1"
) -> StackOptions:
    """The stack's options; without a template (none given and none here), a stack with the
    settings' defaults and no SageMaker endpoint."""
    if template is None:
        if parameters:
            raise StackParametersError("stack parameters need the template (--template)")
        defaults = {
            "DATA_BUCKET": f"{STACK_NAME}-data",
            "LEDGER_TABLE": f"{STACK_NAME}-ledger",
            "STATE_MACHINE_ARN": f"arn:aws:states:{region}:000000000000:stateMachine:batch",
            "AWS_REGION": region,
        }
        return StackOptions.from_settings(IngestSettings.from_env(defaults))
    return StackOptions.from_settings(ingest_settings(template, parameters, region))
