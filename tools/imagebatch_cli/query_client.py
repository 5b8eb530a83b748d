"""Clients for the query API: a deployed stack (SigV4-signed HTTPS) or the local ledger exports.

Both answer the same paths with the same JSON, so the CLI's tables do not care which it is.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_since(value: str | None) -> str | None:
    """'7d', '24h', '30m' or an ISO date/time -> an ISO timestamp (UTC)."""
    if value is None:
        return None
    match = _RELATIVE.match(value)
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (datetime.now(UTC) - delta).isoformat(timespec="seconds").replace("+00:00", "Z")
    return value


class QueryApiError(Exception):
    pass


class QueryApi(Protocol):
    def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]: ...


class SigV4Api:
    """The deployed HTTP API (AWS_IAM authorization): requests signed with your credentials."""

    def __init__(self, base_url: str, region: str | None = None) -> None:
        import botocore.session

        self.base_url = base_url.rstrip("/")
        session = botocore.session.get_session()
        self.region = region or session.get_config_variable("region") or "us-east-1"
        credentials = session.get_credentials()
        if credentials is None:
            raise QueryApiError("no AWS credentials found to sign query API requests")
        self._credentials = credentials

    def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = f"{self.base_url}{path}" + (f"?{urlencode(query)}" if query else "")
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(self._credentials, "execute-api", self.region).add_auth(request)
        prepared = urllib.request.Request(url, headers=dict(request.headers.items()))  # noqa: S310 - https from the stack output
        try:
            with urllib.request.urlopen(prepared, timeout=30) as response:  # noqa: S310
                loaded: dict[str, Any] = json.loads(response.read())
                return loaded
        except urllib.error.HTTPError as exc:
            raise QueryApiError(f"GET {path}: HTTP {exc.code}: {exc.read().decode()}") from exc


@contextmanager
def query_api(api: str | None, out: Path, template: Path | None = None) -> Iterator[QueryApi]:
    """The deployed stack's API when `api` is given, else the same handler over the ledgers
    `imagebatch local run` exported under `out`."""
    if api:
        yield SigV4Api(api)
        return
    from imagebatch_cli.local.cloud.http_api import local_api
    from imagebatch_cli.project import template_path

    with local_api(out, template_path(template)) as local:
        yield local
