"""The stack a manifest would land on, from template.yaml and the parameters it was deployed
with: the ingest function's environment resolved as CloudFormation would, read by the same
settings model and `DeployedOptions.from_settings` as the deployed ingest function.

`validate` and `estimate` then run planning's `plan_for_stack` and `assess` on it (what ingest
runs), so what they show is what ingest would do, not a second reading of the rules.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imagebatch.costs.prices import RegionPrices
from imagebatch.manifest.schema import FieldError
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.planning.plan import BatchPlan
from imagebatch.planning.reuse import MadeImages
from imagebatch.planning.stack_options import DeployedOptions
from imagebatch.planning.verdict import Verdict, assess
from imagebatch.planning.what_if import plan_for_stack
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
    from imagebatch_local.template import StackTemplate, TemplateError, load_template

    stack = StackTemplate(STACK_NAME, template.parent, load_template(template))
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


def stack_options(template: Path, parameters: dict[str, str], region: str) -> DeployedOptions:
    """The stack's options: the template deployed with `parameters` in `region`."""
    return DeployedOptions.from_settings(ingest_settings(template, parameters, region))


@dataclass
class IngestPreview:
    """What ingest would do with a manifest on a stack (plan_for_stack and assess)."""

    plan: BatchPlan
    stack: DeployedOptions
    at_zero: bool
    # The lines ingest would report, as errors.jsonl holds them.
    errors: list[FieldError]
    # The estimate by category and why ingest would refuse the batch, as ingest decides.
    verdict: Verdict

    @property
    def rejection(self) -> str | None:
        """Why ingest would refuse the batch; None: it would start it."""
        return self.verdict.rejection


def preview_ingest(
    path: Path,
    *,
    catalogue: ModelCatalogue,
    stack: DeployedOptions,
    prices: RegionPrices,
    at_zero: bool = True,
    made: MadeImages | None = None,
    key: str | None = None,
) -> IngestPreview:
    """Plan the manifest exactly as ingest does (same reader, routing, choice, chunking,
    estimate and verdict) in a scratch spool; `at_zero`: whether the endpoint has no instance
    up; `made`: the stack's image index, read as ingest reads it (None: reuse unknown); `key`:
    where it would be uploaded (default: its name; the catalog function's manifests/catalogs/
    keys may carry the reserved catalog tags). A manifest ingest cannot read at all raises
    ManifestError, as in ingest."""
    with (
        tempfile.TemporaryDirectory(prefix="imagebatch-plan-") as spool,
        path.open("rb") as stream,
    ):
        plan = plan_for_stack(
            stream,
            key or path.name,
            batch_id="preview",
            catalogue=catalogue,
            stack=stack,
            spool=Path(spool),
            at_zero=at_zero,
            made=made,
        )
        errors = (
            [
                FieldError.model_validate_json(line)
                for line in plan.errors_path.read_text(encoding="utf-8").splitlines()
            ]
            if plan.errors_path is not None
            else []
        )
    return IngestPreview(plan, stack, at_zero, errors, assess(plan, stack, prices))
