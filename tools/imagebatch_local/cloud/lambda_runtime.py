"""Runs the template's Lambda handlers in this process, as the Lambda runtime would."""

from __future__ import annotations

import contextvars
import importlib.util
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Any]

#: Whose role the AWS calls of this thread are made with: the logical id of a function (or of
#: a schedule, or the SQS event source polling for a function); None for the operator (the CLI,
#: tests), whose calls the local IAM does not check (iam_enforcer.py).
current_identity: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "imagebatch_local_identity", default=None
)


@contextmanager
def acting_as(identity: str | None) -> Iterator[None]:
    token = current_identity.set(identity)
    try:
        yield
    finally:
        current_identity.reset(token)


@dataclass
class InvocationState:
    """The invocation a thread works for (copied into the threads it starts): once Lambda
    has stopped it at its Timeout, nothing it does after reaches AWS."""

    function: str
    timed_out: bool = False


#: The X-Amz-Invocation-Type the Invoke API was called with on this thread (None: not through
#: the API, or not given). A RequestResponse invoke is synchronous whatever its event looks
#: like: Lambda neither retries it nor sends it to a destination.
requested_invocation_type: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "imagebatch_local_invocation_type", default=None
)

#: The Lambda invocation this thread's calls belong to; None outside one.
current_invocation: contextvars.ContextVar[InvocationState | None] = contextvars.ContextVar(
    "imagebatch_local_invocation", default=None
)


class LambdaTimedOut(BaseException):
    """Lambda stopped the invocation at its Timeout (the chaos mode raises it at a call).
    A BaseException: no handler's `except Exception` may survive its own death."""


#: Set in a call's botocore request context by a client bound to an identity (bind_identity).
IDENTITY_CONTEXT_KEY = "imagebatch_local_identity"


def bind_identity(client: Any, identity: str | None) -> Any:
    """Every call through `client` is made with `identity`'s role, whatever thread makes it:
    for code that runs on threads of its own, like the serving container's S3 writer."""

    def mark(context: dict[str, Any], **_: Any) -> None:
        context[IDENTITY_CONTEXT_KEY] = identity

    client.meta.events.register("before-parameter-build", mark)
    return client


@contextmanager
def executor_tasks_inherit_identity() -> Iterator[None]:
    """A task a handler submits to a thread pool runs as that handler, as every thread of a
    Lambda process does: each submit runs its task in a copy of the submitter's context.

    Python's ThreadPoolExecutor does not copy contextvars into its workers; the handlers use
    one for Bedrock calls, PNG uploads and thumbnails, and boto3's transfer manager another.
    """
    original = ThreadPoolExecutor.submit

    def submit(
        self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        return original(self, contextvars.copy_context().run, fn, *args, **kwargs)

    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        ThreadPoolExecutor.submit = original  # type: ignore[method-assign]


# What a task state sees when Lambda stops an invocation at its Timeout: "Unhandled errors in
# Lambda are reported as Lambda.Unknown ... These include out-of-memory errors and function
# timeouts" (docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html).
TIMED_OUT = "Lambda.Unknown"
# What a task state sees when the Lambda service itself fails an invoke (a Map child failing
# through no fault of its code).
MAP_CHILD_FAILED = "Lambda.ServiceException"


@dataclass
class LocalLambdaContext:
    """The attributes of the Lambda context object handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: int
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    memory_mb: int
    timeout_s: int
    environment: dict[str, str]
    #: EventInvokeConfig: retries of a failed asynchronous invocation (Lambda's default: "two
    #: more times", a minute then two apart; here at once), and the ARN of the on-failure
    #: destination (an SQS queue) that then gets its record.
    async_retries: int = 2
    on_failure: str | None = None


#: Sends an invocation record (JSON) to a destination: (the function's logical id, whose role
#: sends it; the destination's ARN; the record).
DestinationSender = Callable[[str, str, str], None]


@dataclass
class Invocation:
    function: str
    seconds: float
    errored: bool
    error_type: str | None = None
    error_message: str | None = None


class InProcessLambdaRuntime:
    """Maps function names to handlers loaded from each function's CodeUri/app.py."""

    def __init__(self, functions: list[FunctionSpec]) -> None:
        self._functions = {spec.name: spec for spec in functions}
        self._handlers: dict[str, Handler] = {}
        self._load_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self.invocations: list[Invocation] = []
        #: Asynchronous invocations that failed every attempt (what a DLQ would receive).
        self.async_failures: list[Invocation] = []
        #: The chaos mode's fault at an invocation (chaos.Chaos.delivery), when it runs.
        self.delivery_fault: Callable[[str, Any], str | None] | None = None
        #: Where an asynchronous invocation's on-failure record goes (session.py sends it to
        #: the local SQS); None: the record is only kept in async_failures.
        self.send_to_destination: DestinationSender | None = None

    def _handler(self, spec: FunctionSpec) -> Handler:
        with self._load_lock:
            if spec.name not in self._handlers:
                module_name, _, attr = spec.handler.rpartition(".")
                path = spec.code_dir / f"{module_name.replace('.', '/')}.py"
                module = load_module(f"imagebatch_fn_{spec.logical_id}", path)
                self._handlers[spec.name] = getattr(module, attr)
            return self._handlers[spec.name]

    def invoke(self, function_name: str, event: Any) -> tuple[str, bool]:
        spec = self._functions[function_name]
        if isinstance(event, str | bytes):
            event = json.loads(event or "{}")
        context = LocalLambdaContext(
            function_name=spec.name,
            memory_limit_in_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
            invoked_function_arn=spec.arn,
            log_group_name=f"/aws/lambda/{spec.name}",
        )
        fault = self.delivery_fault(spec.logical_id, event) if self.delivery_fault else None
        if fault == "map-child-failed":
            message = "injected: the Lambda service failed the invocation"
            self._record(Invocation(spec.name, 0.0, True, MAP_CHILD_FAILED, message))
            return json.dumps({"errorType": MAP_CHILD_FAILED, "errorMessage": message}), True
        if fault == "delivered-twice":
            # the event source delivers again whatever became of the first delivery
            self._run(spec, event, context)
            context = _again(context)
        if requested_invocation_type.get() == "RequestResponse" or not _is_asynchronous(event):
            return self._run(spec, event, context)
        request_id = context.aws_request_id
        for _attempt in range(spec.async_retries):
            payload, errored = self._run(spec, event, context)
            if not errored:
                return payload, errored
            context = _again(context)
        payload, errored = self._run(spec, event, context)
        if errored:
            # the record first: whoever sees the failure finds it on the queue
            self._send_failure(spec, event, payload, request_id)
            with self._log_lock:
                # this function's last run, not the list's last: another function (a batch's
                # contact sheet, say) may have finished in between
                failed = next(i for i in reversed(self.invocations) if i.function == spec.name)
                self.async_failures.append(failed)
        return payload, errored

    def _send_failure(self, spec: FunctionSpec, event: Any, payload: str, request_id: str) -> None:
        if spec.on_failure is None or self.send_to_destination is None:
            return
        record = failure_record(spec, event, payload, request_id, spec.async_retries + 1)
        try:
            self.send_to_destination(spec.logical_id, spec.on_failure, json.dumps(record))
        except Exception:  # Lambda counts a DestinationDeliveryFailures metric and goes on
            logger.exception("%s: the on-failure record was not delivered", spec.name)

    def _run(self, spec: FunctionSpec, event: Any, context: LocalLambdaContext) -> tuple[str, bool]:
        started = time.monotonic()
        token = current_invocation.set(InvocationState(spec.logical_id))
        try:
            with acting_as(spec.logical_id):
                result = self._handler(spec)(event, context)
        except LambdaTimedOut:
            seconds = time.monotonic() - started
            message = f"Task timed out after {spec.timeout_s:.2f} seconds"
            self._record(Invocation(spec.name, seconds, True, TIMED_OUT, message))
            return json.dumps({"errorType": TIMED_OUT, "errorMessage": message}), True
        except Exception as exc:  # noqa: BLE001 - becomes the Lambda error payload
            self._record(
                Invocation(
                    spec.name, time.monotonic() - started, True, type(exc).__name__, str(exc)
                )
            )
            logger.info("%s raised %s: %s", spec.name, type(exc).__name__, exc)
            return json.dumps(
                {
                    "errorType": type(exc).__name__,
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_exception(exc)[-5:],
                }
            ), True
        finally:
            current_invocation.reset(token)
        seconds = time.monotonic() - started
        if seconds > spec.timeout_s:
            # Lambda would have stopped it at its Timeout: what it did after that would not
            # have happened, and its caller sees the error Lambda reports, not this result.
            message = f"Task timed out after {spec.timeout_s:.2f} seconds"
            self._record(Invocation(spec.name, seconds, True, TIMED_OUT, message))
            logger.warning(
                "%s ran %.1f s, past its Timeout of %d s", spec.name, seconds, spec.timeout_s
            )
            return json.dumps({"errorType": TIMED_OUT, "errorMessage": message}), True
        self._record(Invocation(spec.name, seconds, False))
        return json.dumps(result, default=str), False

    def logical_id(self, function_name: str) -> str:
        return self._functions[function_name].logical_id

    def _record(self, invocation: Invocation) -> None:
        with self._log_lock:
            self.invocations.append(invocation)


def failure_record(
    spec: FunctionSpec, event: Any, payload: str, request_id: str, attempts: int
) -> dict[str, Any]:
    """What Lambda sends an on-failure destination when an asynchronous invocation's retries
    are spent: the invocation record of the Developer Guide ("Capturing records of Lambda
    asynchronous invocations", example invocation record). An error the function raised or
    its timeout is "Unhandled" in responseContext; the error object is the responsePayload."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{spec.arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": json.loads(payload),
    }


def _is_asynchronous(event: Any) -> bool:
    """An S3 notification or an EventBridge event: S3 and EventBridge (rules, schedules'
    state changes) invoke their functions asynchronously, always."""
    if not isinstance(event, dict):
        return False
    if "detail-type" in event and "source" in event:
        return True
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


def _again(context: LocalLambdaContext) -> LocalLambdaContext:
    """The context of a new attempt: its own request id, its own Timeout."""
    return replace(context, aws_request_id=str(uuid.uuid4()), _started=time.monotonic())


def load_module(name: str, path: Path) -> ModuleType:
    """A handler's module loaded from its file, as the Lambda runtime imports it: by path,
    not through sys.path, so every function's app.py can be called app."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a handler module from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def process_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in os.environ for the block, then put back what was there.

    In-process handlers read their settings from os.environ, as on Lambda; here they share
    it with this process, so every setting is undone when the local AWS stops.
    """
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
