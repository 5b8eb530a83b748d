"""`imagebatch validate MANIFEST`: the manifest checked offline, exactly as ingest checks it.

It runs ingest's own planning (planning's plan_for_stack and assess) over the file,
on the stack the template and the deployed parameters describe: the same line checks, the
same routing of each item to a backend, the same estimate and the same budget verdict.
Exit 0: ingest runs every line; 1: some lines are invalid and would be skipped (on_invalid
skip); 5: ingest would reject the batch (exit_codes.py).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel

from imagebatch.manifest.schema import FieldError
from imagebatch_cli.commands._args import (
    ManifestArgument,
    ParametersOption,
    SampleOption,
    TemplateOption,
    default_region,
    manifest_path,
    stack_for,
)
from imagebatch_cli.deployed_stack import StackOption
from imagebatch_cli.exit_codes import ExitCode, fail
from imagebatch_cli.views.console import emit_json, say

if TYPE_CHECKING:
    from imagebatch.planning.reuse import MadeImages

DEFAULT_CHUNK_SIZE = 50  # template.yaml ChunkSize's default


class EstimateByCategory(BaseModel):
    """Micro-dollars, as ingest records them on the batch before it runs."""

    inference_micro_usd: int
    orchestration_micro_usd: int
    storage_micro_usd: int
    total_micro_usd: int
    overhead_reserve_micro_usd: int


class ValidationReport(BaseModel):
    """`imagebatch validate --json`."""

    manifest: str
    backend: str
    on_invalid: str
    items_valid: int
    images: int
    # images per backend (backend auto routes item by item), and why the images either
    # backend could make went where they did
    backends: dict[str, int] = {}
    choice: str | None = None
    invalid_lines: int
    errors: list[FieldError]
    estimate: EstimateByCategory | None
    max_cost_micro_usd: int | None
    # The cap is the stack's DefaultMaxCostUsd: the manifest sets none.
    max_cost_from_stack: bool = False
    # What the stack allows any batch (MaxCostCeilingUsd, MaxImagesPerBatch); None: no limit.
    max_cost_ceiling_micro_usd: int | None = None
    max_images_per_batch: int | None = None
    verdict: str  # "accepted" | "rejected", as ingest will decide
    rejection: str | None
    # images the stack's image index already holds (left out of the estimate) and their
    # inference; None: no stack was asked (offline), reuse unknown
    images_reused: int | None = None
    reuse_saved_micro_usd: int | None = None


# Kept whole: a typer command whose signature is its options (most of its lines).
def validate(  # noqa: PLR0917 - typer turns each parameter into an option
    manifest: ManifestArgument = None,
    sample: SampleOption = None,
    template: TemplateOption = None,
    parameter_overrides: ParametersOption = None,
    shape_buckets: Annotated[
        str | None,
        typer.Option(
            help="Shorthand: a stack with the SageMaker endpoint at these sizes "
            "(EnableSageMaker=true SageMakerShapeBuckets=...).",
            show_default=False,
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="The stack's region: its prices, and models it does not serve are line errors "
            "(default: samconfig.toml's deploy region, else AWS_REGION, else us-west-2).",
            show_default=False,
        ),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option(min=1, max=90, help="Images per chunk (the stack's ChunkSize).")
    ] = DEFAULT_CHUNK_SIZE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    stack: StackOption = None,
) -> None:
    """Validate a manifest offline, exactly as ingest will on the stack: every invalid line,
    each item's backend, the estimate and the budget verdict. With --stack, on that deployed
    stack, its images already made left out of the estimate. Exit 0 runs as is, 1 lines
    skipped, 5 rejected."""
    manifest = manifest_path(manifest, sample)
    made: MadeImages | None = None
    parameters: dict[str, str] | None = None
    if stack:
        from imagebatch_cli.deployed_stack import deployed_stack

        deployed = deployed_stack(stack, use_samconfig=False)
        region, parameters, made = (
            deployed.outputs.region,
            deployed.outputs.parameters,
            deployed.ledger(),
        )
    report = check_manifest(
        manifest,
        region=region or default_region(),
        chunk_size=chunk_size,
        buckets=shape_buckets,
        template=template,
        parameter_overrides=parameter_overrides,
        parameters=parameters,
        made=made,
    )
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    if report.verdict == "rejected":
        raise typer.Exit(ExitCode.REJECTED)
    if report.invalid_lines:
        raise typer.Exit(ExitCode.ERROR)


# Kept whole: a typer command whose signature is its options (most of its lines).
def check_manifest(
    manifest: Path,
    *,
    region: str,
    chunk_size: int,
    buckets: str | None,
    template: Path | None = None,
    parameter_overrides: list[str] | None = None,
    parameters: dict[str, str] | None = None,
    made: MadeImages | None = None,
) -> ValidationReport:
    """Ingest's plan of the manifest on the stack, without uploading anything. `parameters`:
    the stack's template parameters as deployed (DescribeStacks), under any override; `made`:
    its image index (None: reuse unknown)."""
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch.errors import ManifestError
    from imagebatch.manifest.reader import format_for_key
    from imagebatch.models.bedrock_models import load_catalogue
    from imagebatch.models.money import MICRO
    from imagebatch_cli.template_preview import preview_ingest

    extra = {"ChunkSize": str(chunk_size), **(parameters or {})}
    if buckets:
        extra |= {"EnableSageMaker": "true", "SageMakerShapeBuckets": buckets}
    stack = stack_for(template, parameter_overrides, region, extra)
    prices = stack.prices
    if prices is None:
        fail(load_aws_prices().unsupported_region_reason(region) or f"no prices for {region}")
    try:
        format_for_key(manifest.name)
        preview = preview_ingest(
            manifest, catalogue=load_catalogue(), stack=stack, prices=prices, made=made
        )
    except ManifestError as exc:
        # A manifest ingest cannot read at all (header, columns): rejected as a whole.
        where = f":{exc.line}" if exc.line else ""
        fail(f"{manifest}{where}: {exc}", code=ExitCode.REJECTED)
    plan, errors, rejection = preview.plan, preview.errors, preview.rejection
    estimate = preview.verdict.estimate
    settings = plan.settings
    return ValidationReport(
        manifest=str(manifest),
        backend=plan.backend,
        on_invalid=settings.on_invalid,
        items_valid=plan.items_valid,
        images=plan.images_total,
        backends=dict(plan.backends),
        choice=plan.choice,
        invalid_lines=plan.invalid_lines,
        errors=errors,
        estimate=EstimateByCategory(
            inference_micro_usd=estimate.inference_micro_usd,
            orchestration_micro_usd=estimate.orchestration_micro_usd,
            storage_micro_usd=estimate.storage_micro_usd,
            total_micro_usd=estimate.total_micro_usd,
            overhead_reserve_micro_usd=estimate.overhead_reserve_micro_usd,
        )
        if estimate is not None and plan.images_total
        else None,
        max_cost_micro_usd=int(settings.max_cost_usd * MICRO)
        if settings.max_cost_usd is not None
        else None,
        max_cost_from_stack=plan.cap_from_stack,
        max_cost_ceiling_micro_usd=int(stack.limits.max_cost_ceiling_usd * MICRO)
        if stack.limits.max_cost_ceiling_usd is not None
        else None,
        max_images_per_batch=stack.limits.max_images_per_batch,
        verdict="rejected" if rejection else "accepted",
        rejection=rejection,
        images_reused=plan.reuse.images if plan.reuse else None,
        reuse_saved_micro_usd=plan.reuse.saved_micro_usd if plan.reuse else None,
    )


def error_lines(manifest: str, errors: list[FieldError]) -> list[str]:
    """One line per invalid manifest line: `file:line: field (id X): reason; field: reason`."""
    by_line: dict[int, list[FieldError]] = defaultdict(list)
    for error in errors:
        by_line[error.line].append(error)
    lines = []
    for line, found in sorted(by_line.items()):
        item_id = next((e.item_id for e in found if e.item_id), None)
        item = f" (id {item_id})" if item_id else ""
        reasons = [f"{e.field}{item if n == 0 else ''}: {e.reason}" for n, e in enumerate(found)]
        lines.append(f"{manifest}:{line}: " + "; ".join(reasons))
    return lines


def _limits_line(report: ValidationReport) -> str | None:
    from decimal import Decimal

    from imagebatch.models.money import MICRO
    from imagebatch.planning.stack_options import BatchLimits
    from imagebatch_cli.views.estimate import limits_line

    ceiling = report.max_cost_ceiling_micro_usd
    return limits_line(
        BatchLimits(
            max_cost_ceiling_usd=Decimal(ceiling) / MICRO if ceiling is not None else None,
            max_images_per_batch=report.max_images_per_batch,
        )
    )


def _print_report(report: ValidationReport) -> None:
    from imagebatch.models.money import format_usd as usd

    for line in error_lines(report.manifest, report.errors):
        say(line, err=True)
    say(
        f"{report.manifest}: {report.items_valid} valid item(s), {report.images} image(s), "
        f"{report.invalid_lines} invalid line(s); backend {report.backend}, "
        f"on_invalid {report.on_invalid}"
    )
    if len(report.backends) > 1 or report.choice:
        say("images: " + ", ".join(f"{n} on {b}" for b, n in sorted(report.backends.items())))
    if report.choice:
        say(f"images either backend could make: {report.choice}")
    estimate = report.estimate
    if estimate is not None:
        say(
            f"estimate on {report.backend}: {usd(estimate.total_micro_usd)} "
            f"(inference {usd(estimate.inference_micro_usd)}, orchestration "
            f"{usd(estimate.orchestration_micro_usd)}, storage "
            f"{usd(estimate.storage_micro_usd)})"
        )
    if estimate is not None:
        from imagebatch_cli.views.estimate import reuse_line

        say(reuse_line(report.images_reused, report.images, report.reuse_saved_micro_usd or 0))
    if report.max_cost_micro_usd is not None and estimate is not None:
        held = estimate.total_micro_usd + estimate.overhead_reserve_micro_usd
        verdict = "exceeds it" if held > report.max_cost_micro_usd else "fits"
        source = (
            " (the stack's DefaultMaxCostUsd: the manifest sets none)"
            if report.max_cost_from_stack
            else ""
        )
        say(
            f"budget (max_cost_usd) {usd(report.max_cost_micro_usd)}{source}: estimate + "
            f"reserve {usd(held)} {verdict}"
        )
    limits = _limits_line(report)
    if limits:
        say(limits)
    if report.rejection:
        say(f"ingest would REJECT this batch: {report.rejection}", err=True)
    else:
        skipped = (
            f", skipping {report.invalid_lines} invalid line(s)" if report.invalid_lines else ""
        )
        say(f"ingest would accept this batch{skipped}")
