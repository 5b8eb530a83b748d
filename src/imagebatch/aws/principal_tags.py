"""The tags of the IAM principal behind a query API request, for tenancy (api/tenancy.py).

API Gateway's IAM authorization hands the handler the caller's ARN
(requestContext.authorizer.iam.userArn) but not its principal tags, so they are read here:
ListRoleTags for an assumed role (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION), ListUserTags
for an IAM user. IAM's control plane is throttled per account, so each principal's tags are
kept for TAGS_TTL_S in the warm execution environment: a tag change reaches the API within it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from imagebatch.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

TAGS_TTL_S = 300


class PrincipalTags:
    def __init__(self, client: IAMClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._iam = client
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}

    def tags_of(self, principal_arn: str) -> dict[str, str]:
        """The principal's tags; {} for a principal IAM keeps no tags for (the root user, a
        federated user). StorageError when IAM refuses or fails."""
        cached = self._cache.get(principal_arn)
        if cached is not None and self._clock() - cached[0] < TAGS_TTL_S:
            return cached[1]
        tags = self._read(principal_arn)
        self._cache[principal_arn] = (self._clock(), tags)
        return tags

    def _read(self, principal_arn: str) -> dict[str, str]:
        resource = principal_arn.split(":", 5)[-1]
        kind, _, rest = resource.partition("/")
        try:
            if kind == "assumed-role":
                role = rest.split("/", 1)[0]
                listed = self._iam.list_role_tags(RoleName=role)["Tags"]
            elif kind == "user":
                user = rest.rsplit("/", 1)[-1]  # a user ARN carries its path
                listed = self._iam.list_user_tags(UserName=user)["Tags"]
            else:
                return {}
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"tags of {principal_arn}: {exc}", transient=True) from exc
        return {tag["Key"]: tag["Value"] for tag in listed}
