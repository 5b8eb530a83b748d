"""The query API without API Gateway: HTTP API (payload 2.0) events for the real handler.

moto does not run API Gateway proxy integrations, so locally the handler from template.yaml's
QueryFunction is called with the event API Gateway would send. `QueryApiWsgi` serves it over
WSGI (plus /openapi.json), which is what the schemathesis test drives; the CLI calls
`LocalQueryApi.get` directly, over the ledgers `local run` exported (`local_api`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from imagebatch_local.cloud.lambda_runtime import (
    LocalLambdaContext,
    load_module,
    process_environment,
)
from imagebatch_local.ledger_export import ledger_exports
from imagebatch_local.query_api_errors import QueryApiError, api_error_message
from imagebatch_local.template import ACCOUNT_ID, REGION

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


#: Who calls the local API unless told: a role session, as a developer's SSO role arrives.
LOCAL_CALLER = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/imagebatch-local-caller/local"


def http_api_event(
    method: str,
    path: str,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] = {},
    *,
    caller_arn: str = LOCAL_CALLER,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-2.0 event, as an IAM-authorized request produces: the
    caller's ARN in requestContext.authorizer.iam (userArn), its principal tags not at all
    (API Gateway does not pass them; the handler reads them from IAM)."""
    raw_query = urlencode(query or {})
    session = caller_arn.rsplit("/", 1)[-1]
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {"host": "localhost", **{k.lower(): v for k, v in headers.items()}},
        "queryStringParameters": dict(query) if query else None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "authorizer": {
                "iam": {
                    "accessKey": "ASIALOCALACCESSKEY00",
                    "accountId": ACCOUNT_ID,
                    "callerId": f"AROALOCALROLEID:{session}",
                    "principalOrgId": None,
                    "userArn": caller_arn,
                    "userId": f"AROALOCALROLEID:{session}",
                }
            },
            "domainName": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "imagebatch-local",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": False,
    }


def load_query_handler(code_dir: Path) -> Handler:
    """`code_dir`/app.py's handler (the application's functions/query), loaded the way the
    in-process Lambda runtime does. The caller names the folder: where the application lives
    is the CLI's to know (imagebatch_cli.project), not the local AWS's."""
    path = code_dir / "app.py"
    handler: Handler = load_module("imagebatch_fn_QueryFunction", path).handler
    return handler


class LocalQueryApi:
    def __init__(self, handler: Handler, *, caller_arn: str = LOCAL_CALLER) -> None:
        self._handler = handler
        self.caller_arn = caller_arn

    def call(
        self, method: str, path: str, query: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        context = LocalLambdaContext(
            function_name="imagebatch-local-QueryFunction", memory_limit_in_mb=512, timeout_s=29
        )
        event = http_api_event(method, path, query, caller_arn=self.caller_arn)
        response = self._handler(event, context)
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        return int(response["statusCode"]), body

    def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        status, body = self.call("GET", path, query)
        if status != 200:
            raise QueryApiError(api_error_message(path, status, body))
        loaded: dict[str, Any] = json.loads(body)
        return loaded


class QueryApiWsgi:
    """WSGI app: /openapi.json from the committed document, everything else via the handler."""

    def __init__(self, api: LocalQueryApi, openapi: dict[str, Any]) -> None:
        self._api = api
        self._openapi = openapi

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/openapi.json":
            body = json.dumps(self._openapi)
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body.encode()]
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        status, body = self._api.call(environ["REQUEST_METHOD"], path, query)
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 422: "Unprocessable Entity"}
        start_response(
            f"{status} {reason.get(status, 'Status')}", [("Content-Type", "application/json")]
        )
        return [body.encode()]


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
    from imagebatch_local.template import load_template

    loaded = load_template(template)
    properties = loaded["Resources"]["LedgerTable"]["Properties"]
    shape = json.loads(
        json.dumps(
            {
                k: properties[k]
                for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
                if k in properties
            }
        )
    )
    # The functions' Powertools service, as deployed: the shared logger is made once, on first
    # import, and the modules' child loggers hang under its name (a later local run in this
    # process would otherwise log under another service, past its handler).
    variables = loaded.get("Globals", {}).get("Function", {}).get("Environment", {})
    service = variables.get("Variables", {}).get("POWERTOOLS_SERVICE_NAME")
    settings = {
        "LEDGER_TABLE": "local-ledger",
        "DATA_BUCKET": "local-data",
        "AWS_DEFAULT_REGION": REGION,
        **({"POWERTOOLS_SERVICE_NAME": str(service)} if isinstance(service, str) else {}),
    }
    with mock_aws(), process_environment(settings):
        try:
            client = boto3.client("dynamodb", region_name=REGION)
            client.create_table(TableName="local-ledger", BillingMode="PAY_PER_REQUEST", **shape)
            for record in ledger_exports(out):
                client.put_item(TableName="local-ledger", Item=to_item(record))
            reset_clients()
            yield LocalQueryApi(load_query_handler(template.parent / "functions" / "query"))
        finally:
            reset_clients()
