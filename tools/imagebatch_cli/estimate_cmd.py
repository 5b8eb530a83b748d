"""`imagebatch estimate MANIFEST`: what ingest would do with the manifest on this stack (which
backend makes each item, chunks, estimate, budget), then every backend priced for it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from imagebatch.costs.estimate import (
    BackendOption,
    Shape,
    bedrock_options,
    break_even,
    choose_backend,
    sagemaker_options,
)
from imagebatch.costs.prices import RegionPrices
from imagebatch.manifest.checks import check_item_for_model
from imagebatch.manifest.reader import ManifestReader, format_for_key
from imagebatch.manifest.schema import FieldError, ValidItem
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.pipeline.ingest import BatchPlan, StackOptions, plan_for_stack, rejection_reason
from imagebatch_cli.report import usd


@dataclass
class IngestPreview:
    """What ingest would do with a manifest on a stack (pipeline.ingest.plan_for_stack)."""

    plan: BatchPlan
    stack: StackOptions
    errors: list[FieldError]
    # Why ingest would refuse the batch; None: it would start it.
    rejection: str | None


def preview_ingest(
    path: Path, *, catalogue: ModelCatalogue, stack: StackOptions, at_zero: bool = True
) -> IngestPreview:
    """Plan the manifest exactly as ingest does (same reader, routing, choice, chunking and
    estimate), in a scratch spool; `at_zero`: whether the endpoint has no instance up."""
    with tempfile.TemporaryDirectory(prefix="imagebatch-estimate-") as spool:
        with path.open("rb") as stream:
            plan = plan_for_stack(
                stream,
                path.name,
                batch_id="estimate",
                catalogue=catalogue,
                stack=stack,
                spool=Path(spool),
                at_zero=at_zero,
            )
        errors = (
            [
                FieldError.model_validate_json(line)
                for line in plan.errors_path.read_text().splitlines()
            ]
            if plan.errors_path is not None
            else []
        )
    rejection = rejection_reason(plan, sagemaker_deployed=stack.deployment is not None)
    return IngestPreview(plan, stack, errors, rejection)


def describe_stack(stack: StackOptions, at_zero: bool) -> str:
    deployment = stack.deployment
    if deployment is None:
        return f"chunks of {stack.chunk_size}; no SageMaker endpoint (EnableSageMaker=false)"
    buckets = ", ".join(str(b) for b in deployment.buckets) or "any size"
    stands_in = (
        f", standing in for {', '.join(sorted(deployment.stands_in_for))}"
        if deployment.stands_in_for
        else ""
    )
    return (
        f"chunks of {stack.chunk_size}; endpoint {deployment.endpoint_name} on "
        f"{deployment.instance_type} serving {deployment.model_id} at {buckets}{stands_in}; "
        + ("at zero (a cold start and the idle tail count)" if at_zero else "warm")
    )


def ingest_table(preview: IngestPreview) -> Table:
    """One row per backend the batch would use: its images, chunks and expected inference."""
    plan = preview.plan
    table = Table(title="what ingest would do on this stack", header_style="bold")
    for column in ("backend", "images", "chunks", "inference"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for backend, images in sorted(plan.backends.items()):
        chunks = sum(1 for b in plan.chunk_backends if b == backend)
        inference = plan.inference_by_backend.get(backend, 0)
        table.add_row(backend, str(images), str(chunks), f"${float(inference) / 1e6:.6f}")
    return table


def ingest_summary(preview: IngestPreview) -> list[str]:
    """The lines under the table: the choice, the estimate, and the verdict."""
    plan, lines = preview.plan, []
    if plan.choice:
        lines.append(f"images either backend could make: {plan.choice}")
    estimate = plan.estimate
    if estimate is not None:
        lines.append(
            f"estimate {usd(estimate.total_micro_usd)} for {plan.images_total} images "
            f"(inference {usd(estimate.inference_micro_usd)}, orchestration "
            f"{usd(estimate.orchestration_micro_usd)}, storage {usd(estimate.storage_micro_usd)})"
            f"; {usd(estimate.overhead_reserve_micro_usd)} held back for refusals"
        )
    if plan.endpoint_wake_micro_usd:
        lines.append(
            f"the endpoint is at zero: its cold start and idle tail, about "
            f"{usd(plan.endpoint_wake_micro_usd)}, are charged as endpoint overhead besides "
            "the estimate (docs/sagemaker.md)"
        )
    if preview.rejection is not None:
        lines.append(f"ingest would refuse this batch: {preview.rejection}")
    else:
        lines.append(
            f"ingest would start batch backend {plan.backend}, {len(plan.chunk_ids)} chunk(s)"
        )
    return lines


@dataclass
class ManifestEstimate:
    images: int
    invalid_lines: int
    options: list[BackendOption]
    chosen: BackendOption | None
    deadline_s: float | None


def compatible_models(path: Path, catalogue: ModelCatalogue) -> tuple[int, int, list[str]]:
    """(images, invalid lines, Bedrock models that can make every valid item as written)."""
    images = invalid = 0
    fits = {spec.model_id: True for spec in catalogue.models}
    with path.open("rb") as stream:
        for entry in ManifestReader(stream, format_for_key(path.name), catalogue):
            if not isinstance(entry, ValidItem):
                invalid += 1
                continue
            images += entry.item.count
            for spec in catalogue.models:
                if fits[spec.model_id] and check_item_for_model(entry.item, spec, line=entry.line):
                    fits[spec.model_id] = False
    return images, invalid, [model for model, ok in fits.items() if ok]


def estimate_manifest(
    path: Path,
    *,
    catalogue: ModelCatalogue,
    prices: RegionPrices,
    shape: Shape,
    instance_types: list[str],
    deadline_s: float | None = None,
) -> ManifestEstimate:
    images, invalid, models = compatible_models(path, catalogue)
    options = bedrock_options(models, catalogue, prices, shape)
    options += sagemaker_options(instance_types, prices, shape)
    return ManifestEstimate(
        images, invalid, options, choose_backend(options, images, deadline_s), deadline_s
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_table(estimate: ManifestEstimate) -> Table:
    n = estimate.images
    table = Table(title=f"every backend for all {n} images (what-if)", header_style="bold")
    for column in ("backend", "total", "per image", "per 1,000", "wall time", ""):
        table.add_column(column, justify="left" if column in {"backend", ""} else "right")
    for option in sorted(estimate.options, key=lambda o: o.cost_micro_usd(n)):
        total = option.cost_micro_usd(n)
        late = estimate.deadline_s is not None and option.wall_seconds(n) > estimate.deadline_s
        # The cheapest option for the whole manifest, what-if: per item, ingest's own choice
        # is the table above.
        mark = "cheapest" if option == estimate.chosen else ("misses deadline" if late else "")
        table.add_row(
            option.name,
            usd(total),
            usd(total // n) if n else "-",
            usd(total * 1000 // n) if n else "-",
            _duration(option.wall_seconds(n)),
            mark,
        )
    return table


def break_even_points(options: list[BackendOption]) -> list[tuple[str, str, float]]:
    points = []
    for i, a in enumerate(options):
        for b in options[i + 1 :]:
            n = break_even(a, b)
            if n is not None:
                points.append((a.name, b.name, n))
    return points


def write_chart(estimate: ManifestEstimate, target: Path) -> list[tuple[str, str, float]]:
    """Cost against number of images for every option, break-even points marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = break_even_points(estimate.options)
    top = max([estimate.images * 2, 10, *(int(n * 1.5) for _, _, n in points)])
    xs = sorted({1, *range(1, top + 1, max(1, top // 200)), estimate.images})
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for option in estimate.options:
        ax.plot(xs, [option.cost_micro_usd(x) / 1e6 for x in xs], label=option.name)
    for a_name, _, n in points:
        option = next(o for o in estimate.options if o.name == a_name)
        y = option.cost_micro_usd(round(n)) / 1e6
        ax.plot([n], [y], "ko", markersize=4)
        ax.annotate(f"{n:,.0f}", (n, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(
        estimate.images, color="grey", linestyle=":", label=f"this manifest ({estimate.images})"
    )
    ax.set_xlabel("images")
    ax.set_ylabel("estimated cost (USD)")
    ax.set_yscale("log")
    ax.set_title("imagebatch estimate: cost by backend (dots: break-even points)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return points
