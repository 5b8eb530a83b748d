"""Every way the local AWS differs from moto 5.2.5 as shipped, in one place.

Each workaround is one function with a test of its own (tests/unit/test_moto_workarounds.py),
so a moto upgrade that fixes or breaks one is caught by name. docs/local-aws.md lists them,
with what moto does not check at all.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imagebatch_local.cloud.lambda_runtime import requested_invocation_type

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


class _NoTableCopy:
    """Stands in for the `copy` module inside moto's transact_write_items: the table itself is
    not copied (its rollback "copy" is the table), the touched items are kept instead."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)


def _touched_keys(backend: Any, actions: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    """(table, hash key, range key) of every item a transaction's actions name."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    keys = []
    for action in actions:
        op = next(iter(action.values()), None)
        if not isinstance(op, dict) or op.get("TableName") not in backend.tables:
            continue
        table = backend.tables[op["TableName"]]
        attrs = op.get("Item") if "Item" in op else op.get("Key")
        if not isinstance(attrs, dict) or table.hash_key_attr not in attrs:
            continue
        range_attr = table.range_key_attr
        if range_attr is not None and range_attr not in attrs:
            continue
        hash_key = DynamoType(attrs[table.hash_key_attr])
        range_key = DynamoType(attrs[range_attr]) if range_attr is not None else None
        keys.append((table, hash_key, range_key))
    return keys


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    if range_key is None:
        if item is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = item
    elif item is None:
        table.items[hash_key].pop(range_key, None)
    else:
        table.items[hash_key][range_key] = item


def _transact_with_item_rollback(original: Any) -> Any:
    """moto keeps a rollback copy of a transaction's table by deep-copying the WHOLE table, once
    per action: the cost of a commit grows with the table, so a local batch got slower with
    every image it recorded (and a 53-action commit on a 10,000-item table made 53 copies; a
    10,000-image run once grew past 24 GB). A transaction touches at most 100 items: keep
    copies of those (absent ones as None), let moto run with no table copy, and put them back
    if it fails. Called under the write lock, so the swap of moto's `copy` is this
    transaction's alone."""
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    def transact(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        before = {}
        for table, hash_key, range_key in _touched_keys(self, transact_items):
            ident = (id(table), hash_key, range_key)
            if ident not in before:
                current = table.get_item(hash_key, range_key)
                before[ident] = (table, hash_key, range_key, copy.deepcopy(current))
        setattr(models, "copy", _NoTableCopy(Table))  # noqa: B010 - a module global
        try:
            return original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in before.values():
                _restore(table, hash_key, range_key, item)
            raise
        finally:
            setattr(models, "copy", copy)  # noqa: B010

    return transact


def serialise_dynamodb_writes() -> None:
    """moto's DynamoDB writes are not atomic across threads: concurrent ADDs lose updates.
    Transactions run under the same lock, rolled back by item (_transact_with_item_rollback)."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        key = f"dynamodb.{name}"
        if key in _originals:
            continue
        original = getattr(DynamoDBBackend, name)
        _originals[key] = original
        run = _transact_with_item_rollback(original) if name == "transact_write_items" else original

        def locked(*args: Any, __run: Any = run, **kwargs: Any) -> Any:
            with lock:
                return __run(*args, **kwargs)

        functools.update_wrapper(locked, original)
        setattr(DynamoDBBackend, name, locked)


# DynamoDB keeps a TransactWriteItems ClientRequestToken for 10 minutes after the request
# that used it completed (API reference, TransactWriteItems, ClientRequestToken).
TOKEN_WINDOW_S = 600.0


def honour_transaction_tokens(clock: Callable[[], float] = time.monotonic) -> None:
    """moto ignores TransactWriteItems' ClientRequestToken; DynamoDB does not: a request
    sent again with the token of one that succeeded within 10 minutes succeeds without
    writing anything, and the same token with other parameters is refused with
    IdempotentParameterMismatchException. botocore fills a token in and resends it
    unchanged, so on AWS a transaction whose reply was lost lands once; without this, the
    local AWS applied the resend as well (a budget hold written off as spent by its own
    resend)."""
    from moto.core.responses import ActionResult
    from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException
    from moto.dynamodb.responses import DynamoHandler

    seen: dict[str, tuple[str, float]] = {}
    lock = threading.Lock()
    with _patch_lock:
        if "dynamodb_handler.transact_write_items" in _originals:
            return
        original = DynamoHandler.transact_write_items
        _originals["dynamodb_handler.transact_write_items"] = original

        def transact(self: Any) -> Any:
            token = self.body.get("ClientRequestToken")
            if not token:
                return original(self)
            digest = hashlib.sha256(
                json.dumps(self.body.get("TransactItems"), sort_keys=True).encode()
            ).hexdigest()
            with lock:
                now = clock()
                for old in [t for t, (_, at) in seen.items() if now - at > TOKEN_WINDOW_S]:
                    del seen[old]
                if token in seen:
                    if seen[token][0] != digest:
                        raise DynamodbException(
                            ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException",
                            "ClientRequestToken reused with other parameters",
                        )
                    return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
                result = original(self)  # raises when cancelled: the token is not kept
                seen[token] = (digest, clock())
                return result

        DynamoHandler.transact_write_items = transact  # type: ignore[method-assign]


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

        # Whether the Invoke API was asked for a synchronous call: the runtime cannot tell an
        # S3 event replayed by hand (RequestResponse: no retry, no destination) from S3's own.
        api_invoke = _originals.setdefault("lambda.invoke", LambdaFunction.invoke)

        def invoke_with_type(
            self: Any, body: str, request_headers: Any, response_headers: Any
        ) -> Any:
            headers = request_headers or {}
            kind = headers.get("x-amz-invocation-type") or headers.get("X-Amz-Invocation-Type")
            token = requested_invocation_type.set(kind)
            try:
                return api_invoke(self, body, request_headers, response_headers)
            finally:
                requested_invocation_type.reset(token)

        LambdaFunction.invoke = invoke_with_type  # type: ignore[method-assign]


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
    The event is completed to AWS's shape on the way (complete_s3_event), and in a versioned
    bucket names the object's version, as AWS's does (moto's leaves it out; ingest reads the
    version its event names)."""
    from moto.s3 import notifications

    with _patch_lock:
        original = _originals.setdefault("s3._invoke_awslambda", notifications._invoke_awslambda)
        make_event = _originals.setdefault("s3._get_s3_event", notifications._get_s3_event)

        def event_with_version(
            event_name: str, bucket: Any, key: Any, notification_id: str
        ) -> dict[str, list[dict[str, Any]]]:
            event: dict[str, list[dict[str, Any]]] = make_event(
                event_name, bucket, key, notification_id
            )
            if bucket.is_versioned and key.version_id:
                for record in event["Records"]:
                    record["s3"]["object"]["versionId"] = key.version_id
            return event

        notifications._get_s3_event = event_with_version

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


def _eval_pool_in_a_loop(self: Any, job: Any, worker_frame: Any) -> None:
    """moto's DistributedItemProcessorWorker._eval_pool, with its tail call as a loop."""
    while job is not None:
        job_frame = worker_frame.open_inner_frame()
        self._eval_job(env=job_frame, job=job)
        worker_frame.delete_frame(job_frame)
        # Evaluation terminates here due to exception in job, or worker was stopped.
        if isinstance(job.job_output, Exception) or self.stopped():
            break
        next_job = self._job_pool.next_job()
        if next_job is None:
            # The frame is closed before the job, so the map sees the environment updated.
            break
        self._job_pool.close_job(job)
        job = next_job
    self._env.delete_frame(worker_frame)
    if job is not None:
        self._job_pool.close_job(job)


def iterate_distributed_map_items() -> None:
    """moto's Distributed Map worker evaluates each item and then calls itself for the next
    one: a worker's stack grows by a frame per item, so after about 970 items on one worker
    the interpreter raises RecursionError, the failed items are never reported (only at debug
    level) and the Map waits forever. A 100,000-image batch (2,000 chunks) stalled that way,
    twice. The same steps in a loop."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (  # noqa: E501
        distributed_item_processor_worker as workers,
    )

    worker: Any = workers.DistributedItemProcessorWorker
    with _patch_lock:
        _originals.setdefault("distributed_worker._eval_pool", worker._eval_pool)
        worker._eval_pool = _eval_pool_in_a_loop


def list_moto_modules_once() -> None:
    """moto's server routes every request by host, and to do so lists its own package folder
    (os.listdir, then an isdir per entry: about 1 ms, under the dispatcher's global lock) on
    each request. The folder does not change while a server runs: list it once."""
    from moto import backends

    with _patch_lock:
        original = _originals.setdefault(
            "backends.list_of_moto_modules", backends.list_of_moto_modules
        )
        modules = tuple(original())

        def listed() -> tuple[str, ...]:
            return modules

        backends.list_of_moto_modules = listed


def authorize_sns_deliveries(authorize: Callable[[str, str], bool]) -> None:
    """moto's SNS hands a topic's message to each SQS subscription without asking the queue's
    policy; AWS delivers only where the queue policy allows sns.amazonaws.com with the topic
    as aws:SourceArn. `authorize(topic ARN, queue ARN)` decides; a refused delivery is
    dropped, as AWS drops it (a failed delivery, counted in NumberOfNotificationsFailed)."""
    from moto.sns.models import Subscription

    with _patch_lock:
        original = _originals.setdefault("sns.publish", Subscription.publish)

        def publish(self: Any, message: str, message_id: str, *args: Any, **kwargs: Any) -> Any:
            if self.protocol == "sqs" and not authorize(self.topic.arn, self.endpoint):
                return None
            return original(self, message, message_id, *args, **kwargs)

        Subscription.publish = publish  # type: ignore[method-assign]


def restore_all() -> None:
    """Undo every patch (tests and repeated local runs in one process)."""
    from moto import backends
    from moto.awslambda.models import LambdaFunction
    from moto.core.config import default_user_config
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler
    from moto.s3 import notifications
    from moto.sns.models import Subscription
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as map_module,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (  # noqa: E501
        distributed_item_processor_worker as workers,
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
                "backends": backends,
                "distributed_worker": workers.DistributedItemProcessorWorker,
                "dynamodb": DynamoDBBackend,
                "dynamodb_handler": DynamoHandler,
                "lambda": LambdaFunction,
                "s3": notifications,
                "sns": Subscription,
                "sfn_responses": StepFunctionResponse,
                "sfn_lambda": lambda_module.StateTaskServiceLambda,
                "sfn_map": map_module.DistributedIterationComponent,
            }[owner_name]
            setattr(owner, attr, staticmethod(original) if owner_name == "sfn_lambda" else original)
            del _originals[key]
