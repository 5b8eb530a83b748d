"""`imagebatch local up`: the local AWS kept up, served to other processes, until stopped.

`local run` starts the local AWS (session.py) for one command; this keeps the same one up:
the moto server on a port other processes reach (uploads there fire ingest and the state
machine in this process, as they do for `local run`), the query API served over HTTP from
the stack's own QueryFunction (API Gateway does not run in moto), and a descriptor
(stack_descriptor.py) that `--stack local` reads. The query API checks each request's
SigV4 signature as API Gateway's AWS_IAM authorization does, so an unsigned or wrongly
signed request is refused here as it would be on AWS; then, as that authorization does, it
asks the local IAM check whether the signer may `execute-api:Invoke` the route's ARN (403
if not), and passes the signer's ARN to the handler (whose QueryTenancy reads its tags).

Stopping (stop event set, e.g. by SIGINT/SIGTERM) removes the descriptor first, so no
command finds a stack that is going away, then stops the API server and the local AWS.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from imagebatch_local.cloud.http_api import LOCAL_CALLER, http_api_event
from imagebatch_local.cloud.insider import (
    INSIDER,
    INSIDER_ACCESS_KEY,
    INSIDER_SECRET_KEY,
    insider_role,
)
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws
from imagebatch_local.stack_descriptor import (
    LOCAL_ACCESS_KEY,
    LOCAL_SECRET_KEY,
    LocalStackDescriptor,
    now,
    remove_descriptor,
    write_descriptor,
)
from imagebatch_local.template import ACCOUNT_ID

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}


#: The local query API's id in execute-api ARNs (moto does not create the HttpApi), and its
#: one stage: SAM's HttpApi without StageName deploys `$default`.
LOCAL_API_ID = "local"
STAGE = "$default"


@dataclass(frozen=True)
class ApiCaller:
    """A principal the local query API knows by its access key, as API Gateway's IAM
    authorization knows a signer by its credentials."""

    #: what the handler is told (requestContext.authorizer.iam.userArn)
    arn: str
    secret_key: str
    #: its identity in the local IAM check; None for the operator, whose calls the local AWS
    #: checks nowhere (it stands for the account's administrators)
    owner: str | None


def default_callers() -> dict[str, ApiCaller]:
    """The operator (the CLI's `--stack local`) and the insider (insider.py)."""
    return {
        LOCAL_ACCESS_KEY: ApiCaller(LOCAL_CALLER, LOCAL_SECRET_KEY, None),
        INSIDER_ACCESS_KEY: ApiCaller(
            insider_role().assumed_role_arn(ACCOUNT_ID), INSIDER_SECRET_KEY, INSIDER
        ),
    }


def route_arn(region: str, method: str, path: str, api_id: str = LOCAL_API_ID) -> str:
    """The resource execute-api:Invoke is decided on: api-id/stage/METHOD/path (API Gateway
    developer guide, "Control access for invoking an API")."""
    route = f"{api_id}/{STAGE}/{method}/{path.lstrip('/')}"
    return f"arn:aws:execute-api:{region}:{ACCOUNT_ID}:{route}"


def _forbidden(message: str) -> tuple[int, str]:
    # API Gateway's answer to a request its IAM authorization refuses.
    return 403, json.dumps({"message": message})


def check_sigv4(
    environ: dict[str, Any], region: str, secrets: Mapping[str, str]
) -> tuple[int, str] | str:
    """The signer's access key when the request carries a SigV4 signature for execute-api in
    `region` made with one of `secrets` (access key -> secret key); else the 403 API Gateway
    answers. The signature is recomputed over the headers the request says it signed, at the
    time it says it was signed."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return _forbidden("Missing Authentication Token")
    fields = dict(
        part.strip().split("=", 1)
        for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",")
        if "=" in part
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[0] not in secrets:
        return _forbidden("The security token included in the request is invalid.")
    credentials = Credentials(scope[0], secrets[scope[0]])
    if scope[2:4] != [region, "execute-api"]:
        return _forbidden(f"Credential should be scoped to a valid region and execute-api: {scope}")
    timestamp = environ.get("HTTP_X_AMZ_DATE", "")
    signed = fields.get("SignedHeaders", "").split(";")
    headers = {name: environ.get("HTTP_" + name.upper().replace("-", "_"), "") for name in signed}
    query = environ.get("QUERY_STRING", "")
    url = f"http://{environ.get('HTTP_HOST', '')}{environ.get('PATH_INFO', '/')}"
    request = AWSRequest(
        method=environ["REQUEST_METHOD"], url=url + (f"?{query}" if query else ""), headers=headers
    )
    request.context["timestamp"] = timestamp
    signer = SigV4Auth(credentials, "execute-api", region)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if not timestamp or not hmac.compare_digest(expected, fields.get("Signature", "")):
        return _forbidden(
            "The request signature we calculated does not match the signature you provided."
        )
    return str(credentials.access_key)


class LocalQueryApiServer:
    """The stack's QueryFunction behind an HTTP server, as API Gateway's HTTP API with
    AWS_IAM authorization fronts it on AWS."""

    def __init__(
        self, aws: LocalAws, port: int = 0, extra_callers: Mapping[str, ApiCaller] | None = None
    ) -> None:
        from werkzeug.serving import make_server

        self._aws = aws
        self.api_id = LOCAL_API_ID
        self.callers = {**default_callers(), **(extra_callers or {})}
        self._server = make_server("127.0.0.1", port, self, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-query-api", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status, body = self._answer(environ)
        start_response(
            f"{status} {_REASONS.get(status, 'Status')}", [("Content-Type", "application/json")]
        )
        return [body.encode()]

    def _answer(self, environ: dict[str, Any]) -> tuple[int, str]:
        secrets = {key: caller.secret_key for key, caller in self.callers.items()}
        signed = check_sigv4(environ, self._aws.region, secrets)
        if not isinstance(signed, str):
            return signed
        caller = self.callers[signed]
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if caller.owner is not None:
            # identity and resource policies together, as for every other call; the denial is
            # recorded like any other (an outsider's among outsider_denials)
            resource = route_arn(self._aws.region, method, path, self.api_id)
            if self._aws.iam.check(caller.owner, "execute-api:Invoke", resource) is not None:
                return _forbidden("Forbidden")
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        payload, errored = self._aws.runtime.invoke(
            self._aws.stack.physical["QueryFunction"],
            http_api_event(method, path, query, caller_arn=caller.arn),
        )
        if errored:
            # API Gateway's answer when the integration fails
            logger.warning("query API %s failed: %s", path, payload)
            return 500, json.dumps({"message": "Internal Server Error"})
        response = json.loads(payload)
        return int(response["statusCode"]), str(response.get("body") or "")


def scale_in_if_idle(aws: LocalAws) -> bool:
    """Scale the local endpoint in once no execution is running, as `local run` does after
    each batch (the deployed scale-in alarm waits SageMakerIdleTailMinutes of empty backlog;
    the observer charges the batches their cold start and idle either way). True if it did."""
    if aws.sagemaker is None or aws.sagemaker.current == 0:
        return False
    running = aws.sfn().list_executions(
        stateMachineArn=aws.state_machine_arn, statusFilter="RUNNING", maxResults=1
    )
    if running["executions"]:
        return False
    aws.sagemaker.scale_in()
    return True


@dataclass(frozen=True)
class LocalUp:
    """The running local stack: its local AWS and what `local up` wrote about it."""

    aws: LocalAws
    descriptor: LocalStackDescriptor
    descriptor_path: Path


def descriptor_for(aws: LocalAws, api_url: str) -> LocalStackDescriptor:
    return LocalStackDescriptor(
        region=aws.region,
        endpoint_url=aws.endpoint,
        data_bucket=aws.bucket,
        ledger_table=aws.table,
        query_api_url=api_url,
        state_machine_arn=aws.state_machine_arn,
        ingest_failure_queue_url=aws.stack.physical.get("IngestFailureQueue"),
        ingest_function_name=aws.stack.physical.get("IngestFunction"),
        parameters={k: str(v) for k, v in aws.stack.parameters.items()},
        pid=os.getpid(),
        started_at=now(),
    )


@contextmanager
def local_up(options: LocalOptions, run_dir: Path, api_port: int = 0) -> Iterator[LocalUp]:
    """The local AWS on options.port, its query API on `api_port`, its descriptor in
    `run_dir`; all stopped, and the descriptor removed, when the block ends (however)."""
    with local_aws(options) as aws:
        api = LocalQueryApiServer(aws, api_port)
        try:
            url = api.start()
            descriptor = descriptor_for(aws, url)
            path = write_descriptor(descriptor, run_dir)
            try:
                yield LocalUp(aws, descriptor, path)
            finally:
                remove_descriptor(run_dir)
        finally:
            api.stop()
