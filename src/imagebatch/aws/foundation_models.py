"""Bedrock's control plane for `imagebatch models --live`: each catalogue model's lifecycle
as Bedrock reports it (GetFoundationModel), compared with the catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from imagebatch.aws.session import aws_errors
from imagebatch.models.bedrock_models import ModelCatalogue, ModelSpec

if TYPE_CHECKING:
    from mypy_boto3_bedrock import BedrockClient


# Errors about one model id; anything else (access, credentials) stops the whole listing.
_ABOUT_ONE_MODEL = {"ResourceNotFoundException", "ValidationException"}


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


def live_lifecycles(client: BedrockClient, catalogue: ModelCatalogue) -> list[LiveLifecycle]:
    """GetFoundationModel for each catalogue model; a model the region lacks is reported, and
    a failure that is not about one model (no credentials, no access) is an AwsAccessError."""
    with aws_errors("Bedrock GetFoundationModel"):
        return [_lifecycle(client, spec.model_id) for spec in catalogue.models]


def _lifecycle(client: BedrockClient, model_id: str) -> LiveLifecycle:
    try:
        details = client.get_foundation_model(modelIdentifier=model_id)["modelDetails"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") not in _ABOUT_ONE_MODEL:
            raise
        message = f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
        return LiveLifecycle(model_id, None, None, None, error=message)
    lifecycle: Mapping[str, Any] = details.get("modelLifecycle") or {}
    return LiveLifecycle(
        model_id,
        lifecycle.get("status"),
        _day(lifecycle.get("endOfLifeTime")),
        _day(lifecycle.get("legacyTime")),
    )
