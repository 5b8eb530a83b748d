"""`imagebatch estimate`'s table and chart: each backend's cost, the pick, break-even points."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from imagebatch.costs.estimate import BackendOption, break_even
from imagebatch.models.money import MICRO, ceil_micro
from imagebatch.models.money import format_usd as usd

if TYPE_CHECKING:
    from imagebatch.planning.plan import BatchPlan
    from imagebatch.planning.stack_options import BatchLimits, DeployedOptions
    from imagebatch.planning.verdict import Verdict
    from imagebatch_cli.what_if import ManifestEstimate


def reuse_line(images_reused: int | None, images: int, saved_micro_usd: int) -> str:
    """What the image index says of the manifest (docs/reuse.md); None: not looked up."""
    if images_reused is None:
        return (
            "reuse unknown: no stack to look the images up in (name one with --stack); "
            "the estimate counts every image"
        )
    return (
        f"{images_reused} of {images} images already made, {usd(saved_micro_usd)} saved "
        "(copied, not made; not in the estimate)"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _mark(estimate: ManifestEstimate, option: BackendOption) -> str:
    late = (
        estimate.deadline_s is not None
        and option.wall_seconds(estimate.images) > estimate.deadline_s
    )
    if option == estimate.chosen:
        # what-if for the whole manifest; ingest's own choice, item by item, is printed above
        return "cheapest" if estimate.backend == "auto" else "cheapest allowed"
    return "misses deadline" if late else ""


def estimate_table(estimate: ManifestEstimate) -> Table:
    n = estimate.images
    title = f"{n} images, backend {estimate.backend}"
    if estimate.deadline_s is not None:
        title += f", deadline {estimate.deadline_s / 60:g} min"
    table = Table(title=title, header_style="bold")
    for column in ("backend", "total", "per image", "per 1,000", "wall time", ""):
        table.add_column(
            column,
            justify="left" if column in {"backend", ""} else "right",
            no_wrap=column == "backend",
        )
    for option in sorted(estimate.options, key=lambda o: o.cost_micro_usd(n)):
        total = option.cost_micro_usd(n)
        table.add_row(
            option.name,
            usd(total),
            usd(total // n) if n else "-",
            usd(total * 1000 // n) if n else "-",
            _duration(option.wall_seconds(n)),
            _mark(estimate, option),
        )
    return table


def break_even_points(options: list[BackendOption]) -> list[tuple[str, str, float]]:
    points = []
    for i, a in enumerate(options):
        for b in options[i + 1 :]:
            n = break_even(a, b)
            if n is not None and CHART_MIN_IMAGES <= n <= CHART_MAX_IMAGES:
                points.append((a.name, b.name, n))
    return points


CHART_MIN_IMAGES = 1
CHART_MAX_IMAGES = 100_000


def chart_points() -> list[int]:
    """Image counts from 1 to 100,000, evenly spaced on a log axis (40 per decade)."""
    counts = {round(10 ** (step / 40)) for step in range(0, 5 * 40 + 1)}
    return sorted(n for n in counts if CHART_MIN_IMAGES <= n <= CHART_MAX_IMAGES)


def images_within(option: BackendOption, deadline_s: float) -> float:
    """How many images the option makes before the deadline (0 when its start-up alone
    misses it)."""
    per_image = float(option.seconds_per_image)
    spare = deadline_s - float(option.fixed_seconds)
    if spare <= 0:
        return 0.0
    return spare / per_image if per_image > 0 else float(CHART_MAX_IMAGES)


def write_chart(estimate: ManifestEstimate, target: Path) -> list[tuple[str, str, float]]:
    """The chart as a PNG; returns the break-even points it marks."""
    import matplotlib.pyplot as plt

    fig, points = estimate_figure(estimate)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return points


# Kept whole: one matplotlib figure, drawn top to bottom.
def estimate_figure(estimate: ManifestEstimate) -> tuple[Any, list[tuple[str, str, float]]]:
    """Cost in dollars against number of images (log axes, 1 to 100,000) for every option the
    manifest allows; this manifest's size marked, break-even points dotted, and past the
    deadline each line dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    points = break_even_points(estimate.options)
    xs = chart_points()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for option in estimate.options:
        limit = (
            images_within(option, estimate.deadline_s)
            if estimate.deadline_s is not None
            else float(CHART_MAX_IMAGES)
        )
        inside = [x for x in xs if x <= limit]
        outside = [x for x in xs if x >= limit] if limit < CHART_MAX_IMAGES else []
        (line,) = ax.plot(
            inside or [xs[0]],
            [option.cost_micro_usd(x) / 1e6 for x in inside or [xs[0]]],
            label=option.name,
        )
        if outside:
            ax.plot(
                outside,
                [option.cost_micro_usd(x) / 1e6 for x in outside],
                linestyle="--",
                color=line.get_color(),
                alpha=0.6,
            )
    for a_name, _, n in points:
        option = next(o for o in estimate.options if o.name == a_name)
        y = option.cost_micro_usd(round(n)) / 1e6
        ax.plot([n], [y], "ko", markersize=4)
        ax.annotate(f"{n:,.0f}", (n, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if estimate.images:
        ax.axvline(
            estimate.images,
            color="grey",
            linestyle=":",
            label=f"this manifest ({estimate.images:,} images)",
        )
    title = "imagebatch estimate: cost by backend (dots: break-even points)"
    if estimate.deadline_s is not None:
        title += f"\ndashed: past the {estimate.deadline_s / 60:g}-minute deadline"
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(CHART_MIN_IMAGES, CHART_MAX_IMAGES)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.yaxis.set_major_formatter(FuncFormatter(_dollars))
    ax.set_xlabel("images in the batch (log scale)")
    ax.set_ylabel("estimated cost of the batch (US dollars, log scale)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig, points


def _dollars(value: float, _: object) -> str:
    if value >= 1:
        return f"${value:,.0f}"
    return f"${value:.2f}" if value >= 0.01 else f"${value:.4f}"


def describe_stack(stack: DeployedOptions, at_zero: bool) -> str:
    """The stack in one line: chunking and what the endpoint serves."""
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


def ingest_table(plan: BatchPlan) -> Table:
    """One row per backend the batch would use: its images, chunks and expected inference."""
    table = Table(title="what ingest would do on this stack", header_style="bold")
    for column in ("backend", "images", "chunks", "inference"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for backend, images in sorted(plan.backends.items()):
        chunks = sum(1 for chunk in plan.chunks if chunk.backend == backend)
        inference = plan.inference_by_backend.get(backend, 0)
        table.add_row(backend, str(images), str(chunks), usd(ceil_micro(Decimal(inference))))
    return table


def limits_line(limits: BatchLimits) -> str | None:
    """What the stack allows any batch, whatever its manifest says (validate and estimate)."""
    parts = []
    if limits.max_cost_ceiling_usd is not None:
        ceiling = usd(int(limits.max_cost_ceiling_usd * MICRO))
        parts.append(f"max_cost_usd at most {ceiling} (MaxCostCeilingUsd)")
    if limits.max_images_per_batch is not None:
        parts.append(f"at most {limits.max_images_per_batch:,} images a batch (MaxImagesPerBatch)")
    return "stack limits: " + ", ".join(parts) if parts else None


def ingest_summary(
    plan: BatchPlan, verdict: Verdict, limits: BatchLimits | None = None
) -> list[str]:
    """The lines under the table: the choice, the estimate, the stack's limits and the
    verdict."""
    rejection = verdict.rejection
    lines = []
    if plan.choice:
        lines.append(f"images either backend could make: {plan.choice}")
    estimate = verdict.estimate
    if estimate is not None and plan.images_total:
        lines.append(
            f"estimate {usd(estimate.total_micro_usd)} for {plan.images_total} images "
            f"(inference {usd(estimate.inference_micro_usd)}, orchestration "
            f"{usd(estimate.orchestration_micro_usd)}, storage {usd(estimate.storage_micro_usd)})"
            f"; {usd(estimate.overhead_reserve_micro_usd)} held back for refusals"
        )
    if plan.images_total:
        reuse = plan.reuse
        lines.append(
            reuse_line(
                reuse.images if reuse else None,
                plan.images_total,
                reuse.saved_micro_usd if reuse else 0,
            )
        )
    if plan.cap_from_stack and plan.settings.max_cost_usd is not None:
        lines.append(
            f"budget (max_cost_usd) {usd(int(plan.settings.max_cost_usd * MICRO))}: the "
            "stack's DefaultMaxCostUsd (the manifest sets none)"
        )
    limits_text = limits_line(limits) if limits is not None else None
    if limits_text:
        lines.append(limits_text)
    if plan.endpoint_wake_micro_usd:
        lines.append(
            f"the endpoint is at zero: its cold start and idle tail, about "
            f"{usd(plan.endpoint_wake_micro_usd)}, are charged as endpoint overhead besides "
            "the estimate (docs/sagemaker.md)"
        )
    if rejection is not None:
        lines.append(f"ingest would refuse this batch: {rejection}")
    else:
        lines.append(
            f"ingest would start batch backend {plan.backend}, {len(plan.chunks)} chunk(s)"
        )
    return lines
