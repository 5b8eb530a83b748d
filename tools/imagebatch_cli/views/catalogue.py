"""`imagebatch models`' table: the catalogue, and each model's live lifecycle beside it."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from rich.table import Table

from imagebatch.models.bedrock_models import ModelCatalogue, ModelSpec

if TYPE_CHECKING:
    from imagebatch.aws.foundation_models import LiveLifecycle


def _prices(spec: ModelSpec) -> str:
    return ", ".join(f"{p.tier} ${p.usd_per_image}" for p in spec.prices)


def _lifecycle(spec: ModelSpec, today: date) -> str:
    lifecycle = spec.lifecycle
    if lifecycle.end_of_life is None:
        return lifecycle.status
    state = "RETIRED" if spec.is_retired(today) else lifecycle.status
    advice = f", use {lifecycle.replacement}" if lifecycle.replacement else ""
    return f"{state} (end of life {lifecycle.end_of_life}{advice})"


def catalogue_table(
    catalogue: ModelCatalogue, today: date, live: dict[str, LiveLifecycle] | None = None
) -> Table:
    table = Table(title="Bedrock text-to-image models (catalogue)", header_style="bold")
    # Never truncate an id: it is what a manifest must name.
    table.add_column("model id", no_wrap=True, min_width=max(len(m) for m in catalogue.model_ids))
    for column in ("family", "lifecycle", "price per image", "quota img/min"):
        table.add_column(column)
    if live is not None:
        table.add_column("live (GetFoundationModel)")
    for spec in catalogue.models:
        row = [
            spec.model_id,
            spec.request_family,
            _lifecycle(spec, today),
            _prices(spec),
            str(spec.throughput.images_per_minute),
        ]
        if live is not None:
            row.append(_live_cell(spec, live.get(spec.model_id)))
        table.add_row(*row)
    return table


def _live_cell(spec: ModelSpec, live: LiveLifecycle | None) -> str:
    if live is None:
        return "-"
    if live.error is not None:
        return f"[red]{live.error}[/red]"
    eol = f", end of life {live.end_of_life}" if live.end_of_life else ""
    verdict = "agrees" if live.agrees_with(spec) else "[yellow]differs from the catalogue[/yellow]"
    return f"{live.status}{eol}: {verdict}"
