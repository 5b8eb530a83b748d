"""Query API tenancy (stack parameter QueryTenancy): which batches a caller may read.

The caller's principal tag (TENANCY_PRINCIPAL_TAG, default imagebatch:team) lists, separated
by spaces, the values of the batch tag TENANCY_BATCH_TAG (default team) it may read. A caller
without the tag reads nothing; a batch without the tag is read by nobody (with tenancy on).
API Gateway passes the caller's ARN, not its tags: the handler looks them up
(aws/principal_tags.py) and builds the scope here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from imagebatch.models.tenancy import MAX_TEAMS, TenantScope


def caller_arn(event: Mapping[str, Any]) -> str | None:
    """The IAM-authorized caller of an HTTP API (payload 2.0) event."""
    context = event.get("requestContext") or {}
    iam = (context.get("authorizer") or {}).get("iam") or {}
    arn = iam.get("userArn")
    return str(arn) if arn else None


def scope_for(
    event: Mapping[str, Any],
    tags_of: Callable[[str], Mapping[str, str]],
    *,
    principal_tag: str,
    batch_tag: str,
) -> TenantScope:
    arn = caller_arn(event)
    value = tags_of(arn).get(principal_tag, "") if arn else ""
    teams = frozenset(team for team in value.split() if team)
    return TenantScope(batch_tag=batch_tag, teams=frozenset(sorted(teams)[:MAX_TEAMS]))
