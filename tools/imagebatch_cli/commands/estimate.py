"""`imagebatch estimate MANIFEST`: what ingest would do with it on this stack, then every
backend the manifest allows, priced.

First the stack's own answer: the template with the deployed parameters (template_preview.py)
planned by ingest's code (planning's plan_for_stack and assess): which backend makes
each item, the chunks, the estimate and the budget verdict. Then a what-if for the whole
manifest (what_if.py): `backend: bedrock` on the Bedrock models its lines name, `sagemaker` on
the instance types asked for, `auto` on either, the cheapest within the deadline marked. Other
Bedrock models that could make every item are named below the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel

from imagebatch.costs.estimate import Shape
from imagebatch.models.bedrock_models import load_catalogue
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
from imagebatch_cli.views.console import console, emit_json, say
from imagebatch_cli.what_if import (
    DEFAULT_INSTANCES,
    ManifestEstimate,
    estimate_manifest,
    known_instance_types,
)

if TYPE_CHECKING:
    from imagebatch_cli.template_preview import IngestPreview


class OptionJson(BaseModel):
    name: str
    backend: str
    model: str | None
    instance_type: str | None
    warm: bool | None
    total_micro_usd: int
    per_image_micro_usd: int | None
    per_1000_micro_usd: int | None
    wall_seconds: float
    meets_deadline: bool
    chosen: bool


class IngestJson(BaseModel):
    """What ingest would do on the stack."""

    backends: dict[str, int]
    chunks: int
    choice: str | None
    estimate_micro_usd: int | None
    overhead_reserve_micro_usd: int | None
    endpoint_wake_micro_usd: int
    rejection: str | None
    # images the stack's image index already holds, left out of the estimate; None: no
    # stack asked (reuse unknown)
    images_reused: int | None = None
    reuse_saved_micro_usd: int | None = None


class EstimateJson(BaseModel):
    """`imagebatch estimate --json`."""

    manifest: str
    ingest: IngestJson | None = None
    backend: str
    images: int
    invalid_lines: int
    deadline_s: float | None
    options: list[OptionJson]
    chosen: str | None
    alternatives: list[str]


# Kept whole: a typer command whose signature is its options (most of its lines); the work
# is in what_if.py and the views.
def estimate(  # noqa: PLR0917 - typer turns each parameter into an option
    manifest: ManifestArgument = None,
    sample: SampleOption = None,
    template: TemplateOption = None,
    parameter_overrides: ParametersOption = None,
    endpoint_warm: Annotated[
        bool,
        typer.Option(
            "--endpoint-warm",
            help="The endpoint has an instance up now (no cold start or idle tail to pay); "
            "default: at zero, as it is between batches.",
        ),
    ] = False,
    chart: Annotated[
        Path | None,
        typer.Option(help="Write a PNG of cost against number of images.", show_default=False),
    ] = None,
    deadline: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Minutes the batch may take (default: the manifest's deadline_minutes).",
            show_default=False,
        ),
    ] = None,
    sagemaker_instance: Annotated[
        list[str] | None,
        typer.Option(
            help="SageMaker instance types to price (repeat); default ml.inf2.xlarge and "
            "ml.g4dn.xlarge.",
            show_default=False,
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="Prices of this region (default: samconfig.toml's, else AWS_REGION, else "
            "us-west-2).",
            show_default=False,
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1, max=90, help="Images per chunk.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the options as JSON.")] = False,
    stack: StackOption = None,
) -> None:
    """What ingest would do with MANIFEST on this stack (each item's backend, chunks, estimate,
    budget), then MANIFEST priced on every backend it allows: total, per image, wall time.
    With --stack, on that deployed stack, its images already made left out. Exit 1 when
    ingest would refuse it or no option meets the deadline."""
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch_cli.template_preview import preview_ingest

    manifest = manifest_path(manifest, sample)
    made = None
    deployed_parameters: dict[str, str] = {}
    if stack:
        from imagebatch_cli.deployed_stack import deployed_stack

        deployed = deployed_stack(stack, use_samconfig=False)
        region, deployed_parameters = deployed.outputs.region, deployed.outputs.parameters
        made = deployed.ledger()
    try:
        region = region or default_region()
        prices = load_aws_prices().region(region)
    except KeyError:
        fail(f"no prices for region {region!r} in data/aws_prices.json", code=ExitCode.USAGE)
    known = known_instance_types(prices)
    unknown = [t for t in sagemaker_instance or [] if t not in known]
    if unknown:
        fail(
            f"--sagemaker-instance {', '.join(unknown)}: no price and speed for it; known: "
            + ", ".join(known),
            code=ExitCode.USAGE,
        )
    catalogue = load_catalogue()
    options = stack_for(
        template,
        parameter_overrides,
        region,
        {"ChunkSize": str(chunk_size), **deployed_parameters},
    )
    preview = preview_ingest(
        manifest,
        catalogue=catalogue,
        stack=options,
        prices=prices,
        at_zero=not endpoint_warm,
        made=made,
    )
    if deadline is None and preview.plan.settings.deadline_minutes is not None:
        deadline = float(preview.plan.settings.deadline_minutes)
    result = estimate_manifest(
        manifest,
        catalogue=catalogue,
        prices=prices,
        shape=Shape(chunk_size=chunk_size),
        instance_types=list(sagemaker_instance or DEFAULT_INSTANCES),
        deadline_s=deadline * 60 if deadline is not None else None,
    )
    if as_json:
        emit_json(_as_json(str(manifest), result, preview))
    else:
        from imagebatch_cli.views.stack_costs import stack_monthly_line

        _print_preview(preview)
        _print(result, chart)
        say(stack_monthly_line(prices, sagemaker=preview.stack.deployment is not None))
    if result.chosen is None:
        if not as_json:
            say(_missed_deadline(result), err=True)
        raise typer.Exit(ExitCode.ERROR)
    if preview.rejection is not None:
        raise typer.Exit(ExitCode.ERROR)


def _print_preview(preview: IngestPreview) -> None:
    from imagebatch_cli.views.estimate import describe_stack, ingest_summary, ingest_table

    say(f"stack: {describe_stack(preview.stack, preview.at_zero)}")
    console.print(ingest_table(preview.plan))
    for line in ingest_summary(preview.plan, preview.verdict, preview.stack.limits):
        say(line)


def _print(result: ManifestEstimate, chart: Path | None) -> None:
    from imagebatch_cli.views.estimate import estimate_table, write_chart

    console.print(estimate_table(result))
    if result.invalid_lines:
        say(f"{result.invalid_lines} invalid line(s) left out: see `imagebatch validate`")
    if result.alternatives:
        say(
            "other Bedrock models that can make every item (name one as `model` to use it): "
            + ", ".join(result.alternatives)
        )
    if chart is not None:
        points = write_chart(result, chart)
        say(
            f"chart: {chart}; break-even points: "
            + (", ".join(f"{a} = {b} at {n:,.0f} images" for a, b, n in points) or "none")
        )


def _missed_deadline(result: ManifestEstimate) -> str:
    if not result.options:
        return f"no option: backend {result.backend} has nothing to price for this manifest"
    fastest = min(result.options, key=lambda o: o.wall_seconds(result.images))
    minutes = fastest.wall_seconds(result.images) / 60
    return (
        f"no option this manifest allows meets the deadline of "
        f"{(result.deadline_s or 0) / 60:g} min: the fastest, {fastest.name}, takes "
        f"{minutes:.1f} min for {result.images} images"
    )


def _as_json(manifest: str, result: ManifestEstimate, preview: IngestPreview) -> EstimateJson:
    n = result.images
    rows = []
    for option in sorted(result.options, key=lambda o: o.cost_micro_usd(n)):
        total = option.cost_micro_usd(n)
        wall = option.wall_seconds(n)
        rows.append(
            OptionJson(
                name=option.name,
                backend=option.backend,
                model=option.model,
                instance_type=option.instance_type,
                warm=option.warm,
                total_micro_usd=total,
                per_image_micro_usd=total // n if n else None,
                per_1000_micro_usd=total * 1000 // n if n else None,
                wall_seconds=round(wall, 1),
                meets_deadline=result.deadline_s is None or wall <= result.deadline_s,
                chosen=option == result.chosen,
            )
        )
    plan, estimate = preview.plan, preview.verdict.estimate
    return EstimateJson(
        manifest=manifest,
        ingest=IngestJson(
            backends=dict(plan.backends),
            chunks=len(plan.chunks),
            choice=plan.choice,
            estimate_micro_usd=estimate.total_micro_usd if estimate else None,
            overhead_reserve_micro_usd=estimate.overhead_reserve_micro_usd if estimate else None,
            endpoint_wake_micro_usd=plan.endpoint_wake_micro_usd,
            rejection=preview.rejection,
            images_reused=plan.reuse.images if plan.reuse else None,
            reuse_saved_micro_usd=plan.reuse.saved_micro_usd if plan.reuse else None,
        ),
        backend=result.backend,
        images=n,
        invalid_lines=result.invalid_lines,
        deadline_s=result.deadline_s,
        options=rows,
        chosen=result.chosen.name if result.chosen else None,
        alternatives=result.alternatives,
    )
