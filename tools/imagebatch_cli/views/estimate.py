"""`imagebatch estimate`'s table and chart: each backend's cost, the pick, break-even points."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from imagebatch.costs.estimate import BackendOption, break_even
from imagebatch_cli.views.report import usd

if TYPE_CHECKING:
    from imagebatch_cli.commands.estimate import ManifestEstimate


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_table(estimate: ManifestEstimate) -> Table:
    n = estimate.images
    table = Table(title=f"{n} images", header_style="bold")
    for column in ("backend", "total", "per image", "per 1,000", "wall time", ""):
        table.add_column(column, justify="left" if column in {"backend", ""} else "right")
    for option in sorted(estimate.options, key=lambda o: o.cost_micro_usd(n)):
        total = option.cost_micro_usd(n)
        late = estimate.deadline_s is not None and option.wall_seconds(n) > estimate.deadline_s
        mark = (
            "auto picks this" if option == estimate.chosen else ("misses deadline" if late else "")
        )
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
