"""Which batches a query API caller may read, with tenancy on (api/tenancy.py builds it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

#: DynamoDB's IN takes at most 100 operands; a tag value (256 characters) holds fewer teams.
MAX_TEAMS = 100


class TenantScope(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_tag: str
    teams: frozenset[str]

    def admits(self, tags: Mapping[str, Any] | None) -> bool:
        return str((tags or {}).get(self.batch_tag, "")) in self.teams
