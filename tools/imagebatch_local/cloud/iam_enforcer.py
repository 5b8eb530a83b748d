"""Every AWS call a function or the state machine makes locally is authorized as on AWS.

A botocore event hook on boto3's default session (every client the handlers, moto's Step
Functions engine and the local fakes build comes from it) sees each call before it is sent:
it works out the IAM action(s) and resource ARN(s) the call needs (iam_requests.py), finds
whose role makes it, and decides with that role's statements (iam_policies.py) and the
resource policies of the resource (the bucket, topic and queue policies:
iam_resource_policies.py), as AWS combines them in one account. A call they do not allow
never reaches moto: it fails with the service's own AccessDenied error,
its message naming the role, the action and the resource, as AWS words it. Every denial is
also kept, so a local run fails with it even where the code catches the error.

Who makes a call: the function whose handler runs on the thread (lambda_runtime's
current_identity, set by the in-process runtime and inherited by the handler's thread pools),
the identity a client was bound to (bind_identity: the serving container's clients make the
SageMaker execution role's calls), or the state machine when moto's Step Functions engine
makes it (that engine signs its service calls with the access key "ak"). Calls of no
identity (the CLI, tests) are the operator's and are not checked. A principal outside the
stack (the insider, insider.py) is checked the same way, but its denials are expected: they
are kept apart (outsider_denials) and do not fail a run. Why a hook and not moto's own IAM:
docs/local-aws.md.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse, HTTPHeaders

from imagebatch_local.cloud.iam_policies import Decision, Grant, PolicyError, Role
from imagebatch_local.cloud.iam_requests import IamRequest, Where, requests_for
from imagebatch_local.cloud.iam_resource_policies import (
    Caller,
    ResourcePolicy,
    combine,
    decide,
    request_context,
    resource_verdict,
)
from imagebatch_local.cloud.lambda_runtime import IDENTITY_CONTEXT_KEY, current_identity

logger = logging.getLogger(__name__)

#: moto's Step Functions engine (moto/stepfunctions/parser/asl/utils/boto_client.py) signs
#: the calls of its tasks, ItemReader and ResultWriter with this access key.
ENGINE_ACCESS_KEY = "ak"
#: When set, each local AWS writes the grants it saw used there (iam_report.py reads them).
USAGE_DIR_VARIABLE = "IMAGEBATCH_IAM_USAGE_DIR"

_CONTEXT_KEY = "imagebatch_iam"
_HOOK_ID = "imagebatch-local-iam"
# (HTTP status, error code) of AccessDenied per service, as each service answers it.
_DENIED: dict[str, tuple[int, str]] = {
    "s3": (403, "AccessDenied"),
    "dynamodb": (400, "AccessDeniedException"),
    "stepfunctions": (400, "AccessDeniedException"),
    "lambda": (403, "AccessDeniedException"),
    "bedrock-runtime": (403, "AccessDeniedException"),
    "sagemaker-runtime": (403, "AccessDeniedException"),
    "sqs": (403, "AccessDenied"),
    "sns": (403, "AuthorizationError"),
}


@dataclass(frozen=True)
class Denial:
    owner: str
    role: str
    action: str
    resource: str
    message: str

    def describe(self) -> str:
        return (
            f"IAM denied {self.owner} (role {self.role}) {self.action} on {self.resource}: "
            f"{self.message}"
        )


def access_denied_message(role: Role, account: str, request: IamRequest, decision: Decision) -> str:
    """AWS's wording (e.g. awslabs/aws-deployment-framework#460, a Step Functions task)."""
    if decision.resource_deny:
        why = "with an explicit deny in a resource-based policy"
    elif decision.explicit_deny:
        why = "with an explicit deny in an identity-based policy"
    else:
        why = f"because no identity-based policy allows the {request.action} action"
    return (
        f"User: {role.assumed_role_arn(account)} is not authorized to perform: "
        f"{request.action} on resource: {request.resource} {why}"
    )


class IamEnforcer:
    def __init__(
        self,
        roles: dict[str, Role],
        where: Where,
        engine_role: str | None,
        policies: tuple[ResourcePolicy, ...] = (),
        outsiders: dict[str, Role] | None = None,
    ) -> None:
        self.roles = roles
        self.where = where
        self.engine_role = engine_role
        self.policies = policies
        #: Principals of the account that are not the stack's (the insider): checked alike,
        #: their denials kept in outsider_denials, their grants out of the usage report.
        self.outsiders = dict(outsiders or {})
        self.denials: list[Denial] = []
        self.outsider_denials: list[Denial] = []
        self.used: set[Grant] = set()
        #: (owner, action) of every call that was allowed: what the tests assert was checked.
        self.allowed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._session: boto3.Session | None = None

    # --- hooks ---------------------------------------------------------------------------

    def install(self) -> None:
        """Hook boto3's default session; clients made before this are not checked, so the
        local AWS installs it before any handler builds its clients."""
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
        assert session is not None
        events = session.events
        events.register("before-parameter-build", self._collect, unique_id=f"{_HOOK_ID}-params")
        # A before-call handler that returns (response, parsed) answers the call itself.
        authorize: Any = self._authorize
        events.register("before-call", authorize, unique_id=f"{_HOOK_ID}-call")
        events.register("after-call", self._missing_object, unique_id=f"{_HOOK_ID}-after")
        self._session = session

    def uninstall(self) -> None:
        if self._session is None:
            return
        events = self._session.events
        events.unregister("before-parameter-build", unique_id=f"{_HOOK_ID}-params")
        events.unregister("before-call", unique_id=f"{_HOOK_ID}-call")
        events.unregister("after-call", unique_id=f"{_HOOK_ID}-after")
        self._session = None

    def _identity(self, request_signer: Any, context: dict[str, Any]) -> str | None:
        identity: str | None = context.get(IDENTITY_CONTEXT_KEY) or current_identity.get()
        if identity is not None:
            return identity
        credentials = getattr(request_signer, "_credentials", None)
        if getattr(credentials, "access_key", None) == ENGINE_ACCESS_KEY:
            return self.engine_role
        return None

    def _collect(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        # The call's own parameters (before-call only sees the serialized request).
        service = model.service_model.service_name
        context[_CONTEXT_KEY] = (service, model.name, dict(params))

    def _authorize(
        self, model: Any, context: dict[str, Any], request_signer: Any = None, **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        owner = self._identity(request_signer, context)
        if owner is None or _CONTEXT_KEY not in context:
            return None
        service, operation, params = context[_CONTEXT_KEY]
        try:
            requests = requests_for(service, operation, params, self.where)
        except PolicyError as exc:
            return self._refuse(owner, service, f"{service}:{operation}", "?", str(exc))
        role = self.role(owner)
        for request in requests:
            decision = self.decide(role, request)
            if not decision.allowed:
                message = access_denied_message(role, self.where.account, request, decision)
                return self._refuse(owner, service, request.action, request.resource, message)
            self._use(owner, request.action, decision)
        if service == "s3" and operation in {"GetObject", "HeadObject"}:
            context[f"{_CONTEXT_KEY}-list"] = (owner, params["Bucket"])
        return None

    def _missing_object(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        """S3 answers a missing key with 404 only to a caller allowed s3:ListBucket on the
        bucket; to anyone else it is 403 Access Denied (GetObject/HeadObject API reference,
        "Permissions"). A ListBucket grant limited by an s3:prefix condition does not count:
        the GetObject request carries no prefix."""
        found = context.get(f"{_CONTEXT_KEY}-list")
        if found is None or getattr(http_response, "status_code", 0) != 404:
            return
        owner, bucket = found
        request = IamRequest("s3:ListBucket", f"arn:aws:s3:::{bucket}")
        role = self.role(owner)
        decision = self.decide(role, request)
        if decision.allowed:
            self._use(owner, request.action, decision)
            return
        message = (
            "the object does not exist, and without s3:ListBucket on the bucket S3 answers "
            "403 AccessDenied instead of 404 NoSuchKey"
        )
        self._record(Denial(owner, role.name, request.action, request.resource, message))
        head = context[_CONTEXT_KEY][1] == "HeadObject"
        http_response.status_code = 403
        parsed["Error"] = {
            "Code": "403" if head else "AccessDenied",
            "Message": "Forbidden" if head else "Access Denied",
        }
        parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = 403

    # --- decisions -------------------------------------------------------------------------

    def role(self, owner: str) -> Role:
        return self.roles[owner] if owner in self.roles else self.outsiders[owner]

    def decide(self, role: Role, request: IamRequest) -> Decision:
        return decide(
            role,
            request.action,
            request.resource,
            request.context,
            account=self.where.account,
            policies=self.policies,
        )

    def check(self, owner: str, action: str, resource: str) -> Denial | None:
        """An authorization AWS makes without an API call we can hook (a Distributed Map
        starting its child executions): the denial, recorded, or None."""
        role = self.role(owner)
        request = IamRequest(action, resource)
        decision = self.decide(role, request)
        if decision.allowed:
            self._use(owner, action, decision)
            return None
        message = access_denied_message(role, self.where.account, request, decision)
        denial = Denial(owner, role.name, action, resource, message)
        self._record(denial)
        return denial

    def service_check(
        self, service: str, action: str, resource: str, context: dict[str, str]
    ) -> Denial | None:
        """A call an AWS service principal makes on the stack's behalf, outside any client we
        hook (SNS delivering a topic's message to a queue): only resource policies can allow
        it. The denial, recorded, or None."""
        caller = Caller(self.where.account, service=service)
        full = request_context(context, caller)
        decision = combine(None, resource_verdict(self.policies, caller, action, resource, full))
        if decision.allowed:
            with self._lock:
                self.allowed.add((service, action))
            return None
        why = "an explicit deny in" if decision.explicit_deny else "no statement allowing it in"
        message = f"{service} may not {action} on {resource}: {why} its resource-based policy"
        denial = Denial(service, service, action, resource, message)
        self._record(denial)
        return denial

    def _use(self, owner: str, action: str, decision: Decision) -> None:
        with self._lock:
            if owner in self.roles:
                self.used.update(decision.used)
            self.allowed.add((owner, action))

    def _record(self, denial: Denial) -> None:
        outsider = denial.owner in self.outsiders
        if not outsider:
            logger.warning("%s", denial.describe())
        with self._lock:
            (self.outsider_denials if outsider else self.denials).append(denial)

    def _refuse(
        self, owner: str, service: str, action: str, resource: str, message: str
    ) -> tuple[AWSResponse, dict[str, Any]]:
        role = self.role(owner)
        self._record(Denial(owner, role.name, action, resource, message))
        status, code = _DENIED.get(service, (403, "AccessDenied"))
        request_id = str(uuid.uuid4())
        headers = HTTPHeaders()
        headers["x-amzn-requestid"] = request_id
        response = AWSResponse("", status, headers, None)
        parsed = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "RequestId": request_id,
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        }
        return response, parsed

    # --- usage -----------------------------------------------------------------------------

    def usage(self) -> dict[str, Any]:
        """Every grant of every role, and which of them some call used."""
        grants = [g for role in self.roles.values() for g in role.grants()]
        with self._lock:
            used = sorted({g.key() for g in self.used})
        return {
            "grants": [g.__dict__ for g in grants],
            "role_lines": {owner: role.line for owner, role in self.roles.items()},
            "used": used,
        }

    def write_usage(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"usage-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(self.usage(), indent=1), encoding="utf-8")
        return path


@contextmanager
def enforcing(enforcer: IamEnforcer) -> Iterator[IamEnforcer]:
    enforcer.install()
    try:
        yield enforcer
    finally:
        enforcer.uninstall()
        directory = os.environ.get(USAGE_DIR_VARIABLE)
        if directory:
            enforcer.write_usage(Path(directory))
