"""`imagebatch models`: the catalogue, and each model's live lifecycle from Bedrock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Protocol

import typer

from imagebatch.models.bedrock_models import ModelCatalogue, ModelSpec, load_catalogue
from imagebatch_cli.views.console import console, fail


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
    # botocore only when asked to go live: `imagebatch models` alone stays offline and fast.
    from botocore.exceptions import ClientError

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


def models(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Also ask Bedrock (GetFoundationModel, your AWS credentials) for each "
            "model's lifecycle and compare it with the catalogue.",
        ),
    ] = False,
    region: Annotated[str | None, typer.Option(help="Region for --live.")] = None,
) -> None:
    """List the Bedrock model catalogue: families, lifecycle, prices by tier, quotas."""
    from imagebatch_cli.views.catalogue import catalogue_table

    catalogue = load_catalogue()
    live_by_model = None
    if live:
        import boto3
        from botocore.exceptions import BotoCoreError

        try:
            client = boto3.client("bedrock", region_name=region)
            live_by_model = {f.model_id: f for f in live_lifecycles(client, catalogue)}
        except BotoCoreError as exc:
            fail(f"cannot ask Bedrock: {exc}")
    console.print(catalogue_table(catalogue, datetime.now(UTC).date(), live_by_model))
    for spec in catalogue.models:
        console.print(f"  {spec.model_id}: sizes {spec.describe_sizes()}", soft_wrap=True)
