"""Every way the local AWS differs from moto 5.2.5 as shipped, in one place.

Each workaround is one function with a test of its own (tests/unit/test_moto_workarounds.py),
so a moto upgrade that fixes or breaks one is caught by name. docs/local-aws.md lists them,
with what moto does not check at all.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: The Lambda runtime contract: (event, function name) -> (payload JSON, errored)
InProcessInvoker = Callable[[str, Any], tuple[str, bool]]

_patch_lock = threading.Lock()
_originals: dict[str, Any] = {}
_saved_config: dict[str, Any] = {}


def _post(endpoint: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        f"{endpoint}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()


def reset_moto(endpoint: str) -> None:
    """Not a workaround: moto keeps state per process, so each local run starts empty."""
    _post(endpoint, "/moto-api/reset", {})


def enable_state_machine_execution(endpoint: str) -> None:
    """moto only records executions unless told to run them (POST /moto-api/config).
    Call it before creating state machines: the config call drops existing ones.

    The setting is moto's process-wide config, and the server runs in this process: it
    outlives the server, and a later in-process mock_aws would run (and race) executions a
    test only meant to record. restore_all() puts the previous value back."""
    from moto.core.config import default_user_config

    with _patch_lock:
        _saved_config.setdefault(
            "execute_state_machine",
            default_user_config.get("stepfunctions", {}).get("execute_state_machine", False),
        )
    _post(endpoint, "/moto-api/config", {"stepfunctions": {"execute_state_machine": True}})


class _TableCopyOnce:
    """Stands in for the `copy` module inside moto's transact_write_items."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type
        self._copies: dict[int, Any] = {}

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_type):
            if id(value) not in self._copies:
                self._copies[id(value)] = copy.deepcopy(value)
            return self._copies[id(value)]
        return copy.deepcopy(value, memo)


@contextmanager
def _one_table_copy_per_transaction() -> Iterator[None]:
    """moto keeps a rollback copy of the table by deep-copying the WHOLE table once per
    action of a transaction: a 53-action commit on a 10,000-item table made 53 copies, and a
    10,000-image local run grew past 24 GB and was killed. One copy per table per
    transaction is the same rollback state. Runs under the write lock, so the module-level
    swap is seen by this transaction only."""
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    setattr(models, "copy", _TableCopyOnce(Table))  # noqa: B010 - a module global
    try:
        yield
    finally:
        setattr(models, "copy", copy)  # noqa: B010


def serialise_dynamodb_writes() -> None:
    """moto's DynamoDB writes are not atomic across threads: concurrent ADDs lose updates."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        key = f"dynamodb.{name}"
        if key in _originals:
            continue
        original = getattr(DynamoDBBackend, name)
        _originals[key] = original

        def locked(
            *args: Any, __original: Any = original, __name: str = name, **kwargs: Any
        ) -> Any:
            with lock:
                if __name != "transact_write_items":
                    return __original(*args, **kwargs)
                with _one_table_copy_per_transaction():
                    return __original(*args, **kwargs)

        functools.update_wrapper(locked, original)
        setattr(DynamoDBBackend, name, locked)


def run_lambdas_in_process(invoker: InProcessInvoker) -> None:
    """moto runs Lambda code in Docker; there is none here. Every invoke path (Invoke API,
    Step Functions, S3 notifications) goes through LambdaFunction._invoke_lambda, so the
    handler runs in this process instead. Errors come back as {"errorType","errorMessage"}
    with errored=True, which Step Functions turns into the error name, as on AWS."""
    from moto.awslambda.models import LambdaFunction

    with _patch_lock:
        _originals.setdefault("lambda._invoke_lambda", LambdaFunction._invoke_lambda)

        def invoke(self: Any, event: str | None = None) -> tuple[str, bool, str]:
            payload, errored = invoker(self.function_name, event)
            return payload, errored, ""

        LambdaFunction._invoke_lambda = invoke  # type: ignore[method-assign]


def complete_s3_event(event_body: Any) -> Any:
    """moto's S3 event records lack fields AWS always sends (userIdentity, requestParameters,
    responseElements), which Powertools' S3Model requires. Fill them in as AWS would."""
    for record in event_body.get("Records", []) if isinstance(event_body, dict) else []:
        record.setdefault("userIdentity", {"principalId": "AWS:LOCAL"})
        record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
        record.setdefault("responseElements", {"x-amz-request-id": "LOCAL", "x-amz-id-2": "LOCAL"})
        s3 = record.setdefault("s3", {})
        s3.setdefault("s3SchemaVersion", "1.0")
        s3.setdefault("configurationId", "local")
        bucket = s3.setdefault("bucket", {})
        bucket.setdefault("ownerIdentity", {"principalId": "LOCAL"})
        s3.get("object", {}).setdefault("sequencer", "0")
    return event_body


def invoke_s3_notifications_asynchronously(on_error: Callable[[BaseException], None]) -> None:
    """moto invokes an S3 notification's Lambda inside the PutObject request and swallows its
    errors; AWS invokes it asynchronously. Run it on a thread and report errors instead.
    The event is completed to AWS's shape on the way (complete_s3_event)."""
    from moto.s3 import notifications

    with _patch_lock:
        original = _originals.setdefault("s3._invoke_awslambda", notifications._invoke_awslambda)

        def invoke_later(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
            def run() -> None:
                try:
                    from moto.awslambda.utils import get_backend

                    function = get_backend(account_id, region_name).get_function(fn_arn)
                    function.invoke(json.dumps(complete_s3_event(event_body)), {}, {})
                except BaseException as exc:  # noqa: BLE001 - reported, not swallowed
                    on_error(exc)

            threading.Thread(target=run, name="s3-notification", daemon=True).start()

        notifications._invoke_awslambda = invoke_later
        del original


def forward_task_failure_cause() -> None:
    """moto's SendTaskFailure handler passes `error` to the engine and drops `cause`; AWS puts
    the cause in the failed task's error output ($.error.Cause after a Catch), which the state
    machine records. Forward it."""
    import inspect

    from moto.core.responses import EmptyResult
    from moto.stepfunctions.responses import StepFunctionResponse

    with _patch_lock:
        _originals.setdefault(
            "sfn_responses.send_task_failure", StepFunctionResponse.send_task_failure
        )

        def send_task_failure(self: Any) -> Any:
            backend = self.stepfunction_backend
            kwargs = {"error": self._get_param("error")}
            # Only the engine that executes state machines takes a cause.
            if "cause" in inspect.signature(backend.send_task_failure).parameters:
                kwargs["cause"] = self._get_param("cause")
            backend.send_task_failure(self._get_param("taskToken"), **kwargs)
            return EmptyResult()

        StepFunctionResponse.send_task_failure = send_task_failure  # type: ignore[method-assign]


def name_lambda_access_denied_as_aws() -> None:
    """A Lambda task whose role may not invoke the function fails on AWS with the error
    `Lambda.AWSLambdaException` (the cause carries "Error Code: AccessDeniedException", e.g.
    awslabs/aws-deployment-framework#460); moto names it `Lambda.AccessDeniedException`,
    which the state machine's Retry on Lambda.AWSLambdaException would not match."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_lambda as module,
    )

    service = module.StateTaskServiceLambda
    with _patch_lock:
        original = _originals.setdefault(
            "sfn_lambda._error_cause_from_client_error", service._error_cause_from_client_error
        )

        def error_cause(client_error: Any) -> tuple[str, str]:
            error, cause = original(client_error)
            if error == "Lambda.AccessDeniedException":
                return "Lambda.AWSLambdaException", cause
            return error, cause

        service._error_cause_from_client_error = staticmethod(error_cause)  # type: ignore[method-assign]


@dataclass(frozen=True)
class MapRunCapture:
    """What a Distributed Map's children did: moto runs them inside the parent and throws
    their history away, so neither DescribeExecution nor GetExecutionHistory has them."""

    map_run_arn: str
    execution_arn: str
    state_machine_arn: str
    #: The child executions' history events, interleaved as they happened.
    events: list[dict[str, Any]]
    #: The Map state's collected result (one output per child), None if the run failed.
    result: list[Any] | None


def capture_map_runs(
    before_children: Callable[[str, str], None], on_done: Callable[[MapRunCapture], None]
) -> None:
    """Keep each Map Run's child history and collected result (on_done), and let the local
    IAM authorize the child executions it starts (before_children(state machine ARN,
    execution ARN) may raise: the Map Run then fails before any child runs)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as module,
    )

    component = module.DistributedIterationComponent
    with _patch_lock:
        original = _originals.setdefault("sfn_map._map_run", component._map_run)

        def map_run(self: Any, env: Any, eval_input: Any) -> None:
            data = env.states.context_object.context_object_data
            execution, machine = data["Execution"]["Id"], data["StateMachine"]["Id"]
            before_children(machine, execution)
            children = env.event_manager  # the run's own: the parent's is swapped back after
            result: list[Any] | None = None
            try:
                original(self, env, eval_input)
                result = list(env.stack[-1])
            finally:
                on_done(
                    MapRunCapture(
                        eval_input.map_run_record.map_run_arn,
                        execution,
                        machine,
                        [dict(event) for event in children.get_event_history()],
                        result,
                    )
                )

        component._map_run = map_run  # type: ignore[method-assign]


def restore_all() -> None:
    """Undo every patch (tests and repeated local runs in one process)."""
    from moto.awslambda.models import LambdaFunction
    from moto.core.config import default_user_config
    from moto.dynamodb.models import DynamoDBBackend
    from moto.s3 import notifications
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as map_module,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_lambda as lambda_module,
    )
    from moto.stepfunctions.responses import StepFunctionResponse

    with _patch_lock:
        if "execute_state_machine" in _saved_config:
            default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = (
                _saved_config.pop("execute_state_machine")
            )
        for key, original in list(_originals.items()):
            owner_name, attr = key.split(".", 1)
            owner: Any = {
                "dynamodb": DynamoDBBackend,
                "lambda": LambdaFunction,
                "s3": notifications,
                "sfn_responses": StepFunctionResponse,
                "sfn_lambda": lambda_module.StateTaskServiceLambda,
                "sfn_map": map_module.DistributedIterationComponent,
            }[owner_name]
            setattr(owner, attr, staticmethod(original) if owner_name == "sfn_lambda" else original)
            del _originals[key]
