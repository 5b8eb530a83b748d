"""Chaos mode: the faults AWS really produces, injected at the calls the functions make.

`imagebatch local run --chaos SEED[:RATE]` (and the e2e fixture) install a `Chaos` on the
default boto3 session, as the IAM check is (iam_enforcer.py), so every client a handler
builds carries it. At each AWS call made inside a Lambda invocation it may, with probability
RATE, inject one of:

  throttle          the service's own throttling error, as an HTTP response botocore parses
                    and retries (DynamoDB ThrottlingException, S3 SlowDown, Lambda
                    TooManyRequestsException, Bedrock ThrottlingException, ...)
  server-error      the service's 5xx (InternalServerError, InternalError, ServiceException)
  connection-error  botocore's EndpointConnectionError before the request is sent
  read-timeout      botocore's ReadTimeoutError before the request is sent (at Bedrock
                    InvokeModel the chunk cannot tell it from a lost reply and charges it
                    as rework all the same: the ledger may exceed the bill, never less)
  reply-lost        the request is sent and done, then a ReadTimeoutError: botocore retries
                    a call that already happened, as on AWS when the reply is lost. At
                    Bedrock InvokeModel the local Bedrock has made (and counts) the image:
                    the chunk charges the call as rework, an unconfirmed call
                    (aws/bedrock_runtime.py), and its next attempt makes the image
  killed-before     Lambda stops the invocation at its Timeout before this call is sent
  killed-after      ... after this call succeeded (between a commit and the return)

and, at the invocations themselves (InProcessLambdaRuntime.invoke):

  delivered-twice   an S3 event, an SQS batch or an async invoke delivered a second time
  map-child-failed  a Distributed Map child's Lambda fails (Lambda.ServiceException)

Deterministic per seed: each decision is drawn from random.Random over (seed, the call's
place, how many calls that place has seen), never from a shared stream, so threads racing
do not reshuffle the faults. A place is the caller, the operation and what it acts on (an
S3 key, a DynamoDB key, a function): `place()`.

Not injected, each for a named reason (README "Throttling and failures"):
  - killed-after at Bedrock InvokeModel (or killed-before it): a Lambda stopped while a
    call is in flight, or between a reply and storing the PNG, has bought an image nobody
    will see. The fix on our side is to not let Lambda kill a call in flight
    (CallDeadline), which the chaos cannot then simulate; an out-of-memory kill could.
  - killed-before at S3 PutObject, and any kill of GenerateChunk but at its commit
    (TransactWriteItems): a Lambda stopped while a Bedrock call is in flight on another
    thread, or between a reply and storing the PNG, has bought an image nobody will see.
    CallDeadline bounds each call by the time left less the commit reserve, so a Timeout
    lands at the commit, not there; an out-of-memory kill could (not simulated).
  - faults at the state machine's own calls (moto's engine) and at the local SageMaker
    endpoint's container: only functions' calls carry the hooks.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

from imagebatch_local.cloud.lambda_runtime import (
    IDENTITY_CONTEXT_KEY,
    LambdaTimedOut,
    current_identity,
    current_invocation,
)

# Each kind's weight among the faults drawn: Lambda stopping at its timeout is rarer than
# a throttle; at weight 1 in 13, three attempts of one invocation (Lambda's asynchronous
# retries) all stopped stays rare at the default rate.
CALL_KINDS = {
    "throttle": 3,
    "server-error": 2,
    "connection-error": 2,
    "read-timeout": 2,
    "reply-lost": 2,
    "killed-before": 1,
    "killed-after": 1,
}
DELIVERY_KINDS = ("delivered-twice", "map-child-failed")
# Where a kind is never injected (module docstring says why).
_MARKED_OFF = {
    ("bedrock-runtime", "InvokeModel"): {"killed-before", "killed-after"},
    ("s3", "PutObject"): {"killed-before"},
}

# A function that buys images is killed only at its ledger writes (the commit: before it,
# between the PNGs and the commit; after it, between the commit and the return), never
# while a Bedrock call may be in flight on another thread (module docstring).
_KILLS = frozenset({"killed-before", "killed-after"})
_BUYERS_KILLED_ONLY_AT = {
    "GenerateChunkFunction": frozenset({("dynamodb", "TransactWriteItems")}),
}
# Kinds never given to a buyer's calls (none now: stopped before its commit, the chunk's
# next attempt, whatever its RetryCount, records the PNGs it stored; pipeline.stored_images).
_BUYERS_NOT_KILLED: dict[str, frozenset[str]] = {}

_HOOK_ID = "imagebatch-local-chaos"
_CONTEXT_KEY = "imagebatch_local_chaos"
DEFAULT_RATE = 0.05


def call_kinds(function: str, service: str, operation: str) -> tuple[str, ...]:
    """The kinds a call of `function` may be given (module docstring: what is marked off)."""
    kinds = tuple(k for k in CALL_KINDS if k not in _MARKED_OFF.get((service, operation), ()))
    only_at = _BUYERS_KILLED_ONLY_AT.get(function)
    if only_at is not None and (service, operation) not in only_at:
        kinds = tuple(k for k in kinds if k not in _KILLS)
    never = _BUYERS_NOT_KILLED.get(function, frozenset())
    return tuple(k for k in kinds if k not in never)


class ChaosSpecError(ValueError):
    pass


@dataclass(frozen=True)
class ChaosSpec:
    seed: int
    rate: float = DEFAULT_RATE

    @classmethod
    def parse(cls, text: str) -> ChaosSpec:
        """SEED or SEED:RATE (RATE a share of calls, 0 to 1)."""
        seed_text, _, rate_text = text.partition(":")
        try:
            seed = int(seed_text)
            rate = float(rate_text) if rate_text else DEFAULT_RATE
        except ValueError as exc:
            raise ChaosSpecError(f"--chaos {text!r}: SEED[:RATE], e.g. 7 or 7:0.1") from exc
        if not 0.0 <= rate <= 1.0:
            raise ChaosSpecError(f"--chaos {text!r}: RATE is a share of calls, 0 to 1")
        return cls(seed, rate)


@dataclass(frozen=True)
class Injection:
    kind: str
    place: str
    occurrence: int

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "place": self.place, "occurrence": self.occurrence}


# The error each service answers a throttle and a 5xx with: (HTTP status, code).
_THROTTLE = {
    "s3": (503, "SlowDown"),
    "dynamodb": (400, "ThrottlingException"),
    "lambda": (429, "TooManyRequestsException"),
    "bedrock-runtime": (429, "ThrottlingException"),
    "sagemaker-runtime": (400, "ThrottlingException"),
    "sns": (400, "Throttling"),
}
_SERVER_ERROR = {
    "s3": (500, "InternalError"),
    "dynamodb": (500, "InternalServerError"),
    "lambda": (500, "ServiceException"),
    "bedrock-runtime": (500, "InternalServerException"),
    "sagemaker-runtime": (500, "InternalFailure"),
    "sns": (500, "InternalError"),
}


class _Raw:
    """What AWSResponse reads a body from (urllib3's response, reduced to stream())."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self._body


def error_response(protocol: str, service: str, kind: str, url: str) -> AWSResponse:
    """The service's own error for `kind` (throttle or server-error), in its protocol's
    wire shape, for botocore to parse and retry as it would AWS's."""
    table = _THROTTLE if kind == "throttle" else _SERVER_ERROR
    default = (400, "ThrottlingException") if kind == "throttle" else (500, "InternalFailure")
    status, code = table.get(service, default)
    message = "injected by imagebatch local chaos"
    headers = {"x-amzn-RequestId": "chaos", "x-amz-request-id": "chaos"}
    if protocol == "rest-xml":
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        headers["Content-Type"] = "application/xml"
    elif protocol == "query":
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>{message}</Message></Error></ErrorResponse>"
        ).encode()
        headers["Content-Type"] = "text/xml"
    elif protocol == "rest-json":
        body = json.dumps({"message": message}).encode()
        headers |= {"x-amzn-ErrorType": code, "Content-Type": "application/json"}
    else:  # json (1.0, 1.1), smithy-rpc-v2-cbor is not used by any service we call
        body = json.dumps({"__type": f"com.amazonaws#{code}", "message": message}).encode()
        headers["Content-Type"] = "application/x-amz-json-1.0"
    return AWSResponse(url, status, HTTPHeaders.from_dict(headers), _Raw(body))


def place(identity: str, service: str, operation: str, params: dict[str, Any]) -> str:
    """Where a call acts: its caller, operation and target, without what changes between
    runs (tokens, timestamps), so the same call gets the same decision for one seed."""
    target: list[str] = []
    for name in ("FunctionName", "TableName", "QueueUrl", "modelId", "EndpointName", "name"):
        if name in params:
            target.append(str(params[name]).rsplit(":", 1)[-1].rsplit("/", 1)[-1])
    if "Key" in params:
        key = params["Key"]
        target.append(key if isinstance(key, str) else _digest(key))
    if "TransactItems" in params:
        target.append(_digest(sorted(_item_keys(params["TransactItems"]))))
    if operation == "InvokeModel" and "body" in params:
        target.append(_digest(params["body"]))
    return f"{identity}/{service}.{operation}/{'/'.join(target)}"


def _item_keys(items: list[dict[str, Any]]) -> list[str]:
    keys = []
    for item in items:
        for action in item.values():
            key = action.get("Key") or action.get("Item") or {}
            keys.append(str(key.get("sk", key)))
    return keys


def _digest(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class _Script:
    """A fault a test places by hand: `kind` at the next `left` calls under `prefix`."""

    prefix: str
    kind: str
    left: int


@dataclass
class Chaos:
    spec: ChaosSpec
    injected: list[Injection] = field(default_factory=list)
    _scripts: list[_Script] = field(default_factory=list)
    _seen: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _session: Any = None
    _http: URLLib3Session | None = None

    def reseed(self, spec: ChaosSpec) -> None:
        """Another seed for the calls from now on (one local AWS, many seeds)."""
        with self._lock:
            self.spec = spec
            self._seen.clear()

    def by_kind(self, since: int = 0) -> dict[str, int]:
        return dict(sorted(Counter(i.kind for i in self.injected[since:]).items()))

    def report(self, since: int = 0) -> dict[str, Any]:
        return {
            "seed": self.spec.seed,
            "rate": self.spec.rate,
            "by_kind": self.by_kind(since),
            "injected": [i.as_dict() for i in self.injected[since:]],
        }

    def draw(self, where: str, kinds: tuple[str, ...]) -> str | None:
        """The fault for this occurrence of `where`, or None; recorded when one is drawn."""
        if not kinds or self.spec.rate <= 0:
            return None
        with self._lock:
            self._seen[where] += 1
            occurrence = self._seen[where]
            rng = random.Random(f"{self.spec.seed}|{where}|{occurrence}")
            if rng.random() >= self.spec.rate:
                return None
            kind = rng.choices(kinds, weights=[CALL_KINDS.get(k, 1) for k in kinds])[0]
            self.injected.append(Injection(kind, where, occurrence))
            return kind

    def script(self, prefix: str, kind: str, times: int = 1) -> None:
        """Inject `kind` at the next `times` calls whose place starts with `prefix`, whatever
        the seed and rate: one named fault for a plain test (e.g. "IngestFunction/")."""
        if kind not in CALL_KINDS:
            raise ValueError(f"{kind!r} is not one of {sorted(CALL_KINDS)}")
        with self._lock:
            self._scripts.append(_Script(prefix, kind, times))

    def _scripted(self, where: str) -> str | None:
        with self._lock:
            for script in self._scripts:
                if script.left > 0 and where.startswith(script.prefix):
                    script.left -= 1
                    self.injected.append(Injection(script.kind, where, 0))
                    return script.kind
        return None

    # --- the botocore hooks --------------------------------------------------------------

    def install(self) -> None:
        """Hook boto3's default session (before any handler builds its clients)."""
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
        assert session is not None
        self._http = URLLib3Session()
        events = session.events
        events.register("before-parameter-build", self._collect, unique_id=f"{_HOOK_ID}-params")
        events.register("before-call", self._before_call, unique_id=f"{_HOOK_ID}-call")
        # A before-send handler that returns a response answers the call itself.
        answer: Any = self._before_send
        events.register("before-send", answer, unique_id=f"{_HOOK_ID}-send")
        self._session = session

    def uninstall(self) -> None:
        if self._session is None:
            return
        self._session.events.unregister("before-parameter-build", unique_id=f"{_HOOK_ID}-params")
        self._session.events.unregister("before-call", unique_id=f"{_HOOK_ID}-call")
        self._session.events.unregister("before-send", unique_id=f"{_HOOK_ID}-send")
        self._session = None
        if self._http is not None:
            self._http.close()

    def _collect(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        # The call's own parameters (before-call only sees the serialized request).
        context[f"{_CONTEXT_KEY}-params"] = dict(params)

    def _before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        # Only calls a function makes inside its invocation: not the CLI's, the state
        # machine's, the SQS poller's or the local endpoint's own.
        invocation = current_invocation.get()
        identity = context.get(IDENTITY_CONTEXT_KEY) or current_identity.get()
        if invocation is None or identity is None or identity != invocation.function:
            return
        service = model.service_model.service_name
        params = context.get(f"{_CONTEXT_KEY}-params", {})
        context[_CONTEXT_KEY] = (
            invocation,
            service,
            model.name,
            model.service_model.resolved_protocol,
            place(identity, service, model.name, params),
        )

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        found = getattr(request, "context", {}).get(_CONTEXT_KEY)
        if found is None:
            return None
        invocation, service, operation, protocol, where = found
        if invocation.timed_out:
            raise LambdaTimedOut(invocation.function)
        kind = self._scripted(where) or self.draw(
            where, call_kinds(invocation.function, service, operation)
        )
        if kind is None:
            return None
        if kind in {"throttle", "server-error"}:
            return error_response(protocol, service, kind, request.url)
        if kind == "connection-error":
            raise EndpointConnectionError(endpoint_url=request.url)
        if kind == "read-timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind == "killed-before":
            invocation.timed_out = True
            raise LambdaTimedOut(invocation.function)
        assert self._http is not None
        self._http.send(request)  # the call happens; its reply is what is lost
        if kind == "killed-after":
            invocation.timed_out = True
            raise LambdaTimedOut(invocation.function)
        raise ReadTimeoutError(endpoint_url=request.url)

    # --- the Lambda service's side -------------------------------------------------------

    def delivery(self, function: str, event: Any) -> str | None:
        """A fault at an invocation: delivered-twice for an S3 event or an SQS batch,
        map-child-failed for a Map child (its event names a chunk)."""
        records = event.get("Records") if isinstance(event, dict) else None
        if records:
            source = str(records[0].get("eventSource") or records[0].get("EventSource"))
            ids = sorted(
                str(r.get("messageId") or r.get("s3", {}).get("object", {}).get("key"))
                for r in records
            )
            return self.draw(f"{function}/{source}/{_digest(ids)}", ("delivered-twice",))
        if isinstance(event, dict) and isinstance(event.get("chunk"), dict):
            chunk = str(event["chunk"].get("chunk_id"))
            batch = str(event.get("batch_id"))
            return self.draw(f"{function}/map-child/{batch}/{chunk}", ("map-child-failed",))
        return None


InvocationHook = Callable[[str, Any], str | None]
