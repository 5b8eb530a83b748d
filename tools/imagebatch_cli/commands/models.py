"""`imagebatch models`: the catalogue, and each model's live lifecycle from Bedrock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from imagebatch.models.bedrock_models import load_catalogue
from imagebatch_cli.views.console import console, emit_json, say


def models(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Also ask Bedrock (GetFoundationModel, your AWS credentials) for each "
            "model's lifecycle and compare it with the catalogue.",
        ),
    ] = False,
    region: Annotated[
        str | None, typer.Option(help="Region for --live (default: --region).", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the catalogue (and live lifecycles) as JSON.")
    ] = False,
) -> None:
    """List the Bedrock model catalogue: families, lifecycle, prices by tier, quotas."""
    from imagebatch_cli.views.catalogue import catalogue_table

    catalogue = load_catalogue()
    live_by_model = None
    if live:
        from imagebatch.aws.foundation_models import live_lifecycles
        from imagebatch_cli.settings import aws_session

        bedrock = aws_session(region).bedrock()
        live_by_model = {f.model_id: f for f in live_lifecycles(bedrock, catalogue)}
    if as_json:
        emit_json(_as_json(catalogue.model_dump(mode="json"), live_by_model))
        return
    console.print(catalogue_table(catalogue, datetime.now(UTC).date(), live_by_model))
    for spec in catalogue.models:
        say(f"  {spec.model_id}: sizes {spec.describe_sizes()}")


def _as_json(catalogue: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """The catalogue as data/bedrock_models.json holds it; with --live each model gains
    `live`: {status, end_of_life, legacy_since, error}."""
    if live is not None:
        for model in catalogue["models"]:
            found = live.get(model["model_id"])
            model["live"] = (
                None
                if found is None
                else {
                    "status": found.status,
                    "end_of_life": found.end_of_life,
                    "legacy_since": found.legacy_since,
                    "error": found.error,
                }
            )
    return catalogue
