"""`imagebatch models`: the catalogue, and each model's live lifecycle from Bedrock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError
from rich.table import Table

from imagebatch.models.bedrock_models import ModelCatalogue, ModelSpec


class FoundationModels(Protocol):
    """The one bedrock (control plane) call used: GetFoundationModel."""

    def get_foundation_model(self, *, modelIdentifier: str) -> Any: ...


@dataclass(frozen=True)
class LiveLifecycle:
    model_id: str
    status: str | None  # ACTIVE | LEGACY as Bedrock reports it; None when not found
    end_of_life: date | None
    legacy_since: date | None
    error: str | None = None

    def agrees_with(self, spec: ModelSpec) -> bool:
        if self.status is None:
            return False
        if self.status.lower() != spec.lifecycle.status:
            return False
        return self.end_of_life is None or self.end_of_life == spec.lifecycle.end_of_life


def _day(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return None


def live_lifecycles(client: FoundationModels, catalogue: ModelCatalogue) -> list[LiveLifecycle]:
    """GetFoundationModel for each catalogue model; a model the region lacks is reported."""
    found = []
    for spec in catalogue.models:
        try:
            details = client.get_foundation_model(modelIdentifier=spec.model_id)["modelDetails"]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            found.append(
                LiveLifecycle(
                    spec.model_id,
                    None,
                    None,
                    None,
                    error=f"{error.get('Code', 'Error')}: {error.get('Message', '')}",
                )
            )
            continue
        lifecycle = details.get("modelLifecycle") or {}
        found.append(
            LiveLifecycle(
                spec.model_id,
                lifecycle.get("status"),
                _day(lifecycle.get("endOfLifeTime")),
                _day(lifecycle.get("legacyTime")),
            )
        )
    return found


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
