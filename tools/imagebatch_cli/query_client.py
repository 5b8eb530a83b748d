"""Clients for the query API: a deployed stack (SigV4-signed HTTPS) or the local ledger exports.

Both answer the same paths with the same JSON, so the CLI's tables do not care which it is.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from imagebatch_cli.local.cloud.http_api import LocalQueryApi, QueryApiError, load_query_handler

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


def _ledger_exports(out: Path) -> Iterator[dict[str, Any]]:
    for export in sorted(out.glob("*/ledger.jsonl")):
        for line in export.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


@contextmanager
def local_api(out: Path, template: Path) -> Iterator[LocalQueryApi]:
    """The query handler over the ledgers `imagebatch local run` exported under `out`.

    The exports are loaded into an in-memory DynamoDB (moto) table shaped like template.yaml's
    LedgerTable, so the handler reads them exactly as it reads the deployed table.
    """
    import boto3
    from moto import mock_aws

    from imagebatch.aws.clients import reset_clients
    from imagebatch.aws.dynamo_items import to_item
    from imagebatch_cli.local.cloud.stack import load_template

    properties = load_template(template)["Resources"]["LedgerTable"]["Properties"]
    shape = json.loads(
        json.dumps(
            {
                k: properties[k]
                for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
                if k in properties
            }
        )
    )
    saved = {k: os.environ.get(k) for k in ("LEDGER_TABLE", "DATA_BUCKET", "AWS_DEFAULT_REGION")}
    with mock_aws():
        os.environ.update(
            {
                "LEDGER_TABLE": "local-ledger",
                "DATA_BUCKET": "local-data",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        try:
            client = boto3.client("dynamodb", region_name="us-east-1")
            client.create_table(TableName="local-ledger", BillingMode="PAY_PER_REQUEST", **shape)
            for record in _ledger_exports(out):
                client.put_item(TableName="local-ledger", Item=to_item(record))
            reset_clients()
            yield LocalQueryApi(load_query_handler(template.parent / "functions" / "query"))
        finally:
            reset_clients()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
