"""The whole pipeline on this machine: moto plays AWS, a local model plays Bedrock.

Same template, same handlers, same state machine definition as a deployment; only the
endpoints differ (AWS_ENDPOINT_URL*), and the workarounds in moto_workarounds.py. What this
relies on, and what it cannot check, is in docs/local-aws.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from imagebatch.aws.clients import reset_clients
from imagebatch.aws.ledger import Ledger
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus, batch_id_for
from imagebatch_local.cloud import moto_workarounds
from imagebatch_local.cloud.chaos import Chaos, ChaosSpec
from imagebatch_local.cloud.event_sources import SqsEventSourcePoller, SqsSource
from imagebatch_local.cloud.iam_enforcer import IamEnforcer, enforcing
from imagebatch_local.cloud.iam_policies import stack_roles
from imagebatch_local.cloud.iam_requests import Where
from imagebatch_local.cloud.iam_resource_policies import stack_resource_policies
from imagebatch_local.cloud.insider import INSIDER, create_insider_role, insider_role
from imagebatch_local.cloud.lambda_runtime import (
    DestinationSender,
    InProcessLambdaRuntime,
    acting_as,
    bind_identity,
    executor_tasks_inherit_identity,
    process_environment,
)
from imagebatch_local.cloud.local_stack import LocalStack, create_stack
from imagebatch_local.cloud.moto_callbacks import (
    answers_before_the_wait_are_kept,
    each_attempt_gets_its_own_token,
)
from imagebatch_local.cloud.sfn_limits import (
    LimitViolation,
    history_violations,
    map_run_violations,
)
from imagebatch_local.fakes.bedrock_server import LocalBedrock
from imagebatch_local.fakes.renderers import RENDERERS, NullRenderer, Renderer
from imagebatch_local.template import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

logger = logging.getLogger(__name__)

# The model id of the tiny offline model (data/sagemaker_throughput.json has its speed).
TINY_MODEL_ID = "tiny-sd"

FINAL = {BatchStatus.SUCCEEDED, BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.REJECTED}
ProgressCallback = Callable[[int, int], None]


class LocalRunError(Exception):
    pass


@dataclass
class LocalOptions:
    template: Path = Path("template.yaml")
    model_dir: Path | None = None
    render_short_side: int = 64
    render_steps: int = 1
    throttle_rate: float = 0.0
    content_filter_rate: float = 0.0
    fault_seed: int = 0
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    # Extra function settings over the template's (e.g. RETRY_BASE_MS for a quick rehearsal).
    function_environment: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 1800.0
    region: str = REGION
    # "sagemaker" deploys the template with EnableSageMaker=true and serves its endpoint locally.
    backend: str = "bedrock"
    shape_buckets: str = ""
    max_batch: int = 4
    #: (role owner, action) pairs taken out of the template's roles: shows what AWS would
    #: refuse if the template lacked them (`imagebatch local run --without-permission`).
    without_permissions: tuple[tuple[str, str], ...] = ()
    # "tiny": the tiny diffusers model (or model_dir); "null": flat seed-coloured images at
    # once, no torch (renderers.py) - for benchmarks of the pipeline itself.
    renderer: str = "tiny"
    #: The chaos mode (chaos.py): faults injected at the functions' calls and invocations.
    chaos: ChaosSpec | None = None
    #: The moto server's port; 0: any free one (`local up --port` names one for other tools).
    port: int = 0

    def stack_parameters(self) -> dict[str, str]:
        parameters = {"LogLevel": "WARNING"}
        if self.backend == "sagemaker":
            parameters |= {
                "EnableSageMaker": "true",
                # ECR-shaped, as the template's ECR grant reads its repository from it; the
                # local endpoint serves containers/serving in-process, no image is pulled
                "SageMakerImageUri": (
                    f"{ACCOUNT_ID}.dkr.ecr.{self.region}.amazonaws.com/imagebatch-local:serving"
                ),
                "SageMakerShapeBuckets": self.shape_buckets,
                "SageMakerMaxBatch": str(self.max_batch),
                # what the local endpoint serves: the tiny model, or --model-dir's folder
                "SageMakerModelId": self.model_dir.name if self.model_dir else TINY_MODEL_ID,
            }
        return parameters | self.parameter_overrides


# Keyed by endpoint and region: each local AWS has its own moto server port.
_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


@dataclass
class LocalAws:
    endpoint: str
    stack: LocalStack
    runtime: InProcessLambdaRuntime
    bedrock: LocalBedrock
    notification_errors: list[BaseException]
    iam: IamEnforcer
    sagemaker: Any = None  # LocalAsyncEndpoint when the stack has the SageMaker backend
    poller: SqsEventSourcePoller | None = None
    #: What each Distributed Map run's children did, by map run ARN (moto keeps none of it).
    map_runs: dict[str, moto_workarounds.MapRunCapture] = field(default_factory=dict)
    chaos: Chaos | None = None
    _reported_denials: int = 0
    _reported_ingest_failures: int = 0

    @property
    def region(self) -> str:
        return self.stack.region

    @property
    def bucket(self) -> str:
        return self.stack.physical["DataBucket"]

    @property
    def table(self) -> str:
        return self.stack.physical["LedgerTable"]

    @property
    def state_machine_arn(self) -> str:
        return self.stack.physical["BatchStateMachine"]

    def client(self, service: str) -> Any:
        """One client per service for the whole run: creating a boto3 client costs tens of
        milliseconds of CPU, and wait_for_batch polls five times a second."""
        with _clients_lock:
            key = (self.endpoint, self.region, service)
            if key not in _clients:
                make_client: Any = boto3.client  # typed per literal service name; this takes any
                _clients[key] = make_client(
                    service, endpoint_url=self.endpoint, region_name=self.region
                )
            return _clients[key]

    def s3(self) -> S3Client:
        client: S3Client = self.client("s3")
        return client

    def sfn(self) -> SFNClient:
        client: SFNClient = self.client("stepfunctions")
        return client

    def ledger(self) -> Ledger:
        return Ledger(self.client("dynamodb"), self.table)

    def execution_arn(self, batch_id: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{batch_id}"

    def insider_client(self, service: str) -> Any:
        """A client whose every call is the insider's (insider.py), checked as AWS would."""
        make_client: Any = boto3.client
        client = make_client(service, endpoint_url=self.endpoint, region_name=self.region)
        return bind_identity(client, INSIDER)

    def upload_manifest(
        self, path: Path, key: str | None = None, *, as_insider: bool = False
    ) -> str:
        """Put a manifest under manifests/ (which fires ingest); returns its batch id."""
        key = key or f"manifests/{path.name}"
        body = path.read_bytes()
        s3 = self.insider_client("s3") if as_insider else self.s3()
        s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        # ingest names the batch by the content it reads, not the ETag
        return batch_id_for(self.bucket, key, hashlib.sha256(body).hexdigest())

    def wait_for_batch(
        self, batch_id: str, progress: ProgressCallback | None = None, timeout_s: float = 1800.0
    ) -> BatchRecord:
        ledger, deadline = self.ledger(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.raise_if_denied()
            self._raise_if_ingest_failed()
            summary = ledger.get_batch(batch_id)
            if summary is not None:
                if progress is not None:
                    done = summary.images_succeeded + summary.images_failed
                    progress(done, summary.images_total)
                if summary.status in FINAL:
                    self.raise_if_denied()
                    return summary
                self._raise_if_execution_failed(batch_id)
            time.sleep(0.2)
        raise LocalRunError(f"batch {batch_id} did not finish within {timeout_s:.0f} s")

    def wait_for_execution(self, batch_id: str, timeout_s: float = 300.0) -> str:
        """The batch's execution status once it has left RUNNING (the contact sheet is last);
        LocalRunError if it crossed a Step Functions limit or was denied a call."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                status = self.sfn().describe_execution(executionArn=self.execution_arn(batch_id))
            except self.sfn().exceptions.ExecutionDoesNotExist:
                return "NONE"
            if status["status"] != "RUNNING":
                self.raise_if_denied()
                violations = self.limit_violations(self.execution_arn(batch_id))
                if violations:
                    raise LocalRunError("; ".join(v.describe() for v in violations))
                return status["status"]
            time.sleep(0.2)
        raise LocalRunError(f"execution {batch_id} still running after {timeout_s:.0f} s")

    def raise_if_denied(self) -> None:
        """A call some role was denied fails the run (once per denial), even where the code
        caught the AccessDenied: on AWS that path would be broken."""
        denials = self.iam.denials[self._reported_denials :]
        if denials:
            self._reported_denials += len(denials)
            raise LocalRunError("\n".join(d.describe() for d in denials))

    def limit_violations(self, execution_arn: str) -> list[LimitViolation]:
        """Step Functions limits the execution crossed: its own history and its Map runs'."""
        sfn = self.sfn()
        events: list[dict[str, Any]] = []
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
            events.extend(dict(event) for event in page["events"])
        violations = history_violations(execution_arn, events)
        for run in self.map_runs.values():
            if run.execution_arn == execution_arn:
                violations.extend(map_run_violations(run.map_run_arn, run.events, run.result))
        return violations

    def all_limit_violations(self) -> list[LimitViolation]:
        sfn, violations = self.sfn(), []
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.state_machine_arn
        ):
            for execution in page["executions"]:
                violations.extend(self.limit_violations(execution["executionArn"]))
        return violations

    def fire_schedule(self, schedule_id: str, at: datetime) -> dict[str, Any]:
        """Deliver a schedule's Input to its target once, as EventBridge Scheduler would."""
        scheduler = self.client("scheduler")
        target = scheduler.get_schedule(Name=self.stack.physical[schedule_id])["Target"]
        payload = target.get("Input", "{}").replace(
            "<aws.scheduler.scheduled-time>", at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        lambda_client = self.client("lambda")
        # The Scheduler invokes with the schedule's own role (SAM makes one per schedule).
        with acting_as(schedule_id):
            response = lambda_client.invoke(FunctionName=target["Arn"], Payload=payload.encode())
        body: dict[str, Any] = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            raise LocalRunError(
                f"{schedule_id} target failed: {body.get('errorType')}: {body.get('errorMessage')}"
            )
        return body

    def query_api(
        self, path: str, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """GET `path` of the query API: the QueryFunction invoked in-process with the event an
        IAM-authorized API Gateway request produces (moto runs no HTTP API integration)."""
        from imagebatch_local.cloud.http_api import http_api_event

        payload, errored = self.runtime.invoke(
            self.stack.physical["QueryFunction"], http_api_event("GET", path, query)
        )
        if errored:
            raise LocalRunError(f"query API GET {path}: {payload}")
        response = json.loads(payload)
        return int(response["statusCode"]), json.loads(response.get("body") or "null")

    def _raise_if_ingest_failed(self) -> None:
        if self.sagemaker is not None and self.sagemaker.errors:
            raise LocalRunError(f"local SageMaker endpoint: {self.sagemaker.errors[-1]}")
        if self.notification_errors:
            raise LocalRunError(f"ingest was not invoked: {self.notification_errors[-1]!r}")
        ingest = self.stack.physical["IngestFunction"]
        # an attempt that failed is retried (Lambda's asynchronous retries): only one whose
        # every attempt failed stops the run
        failures = self.runtime.async_failures[self._reported_ingest_failures :]
        self._reported_ingest_failures += len(failures)
        for invocation in failures:
            if invocation.function == ingest:
                raise LocalRunError(
                    f"ingest failed: {invocation.error_type}: {invocation.error_message}"
                )

    def _raise_if_execution_failed(self, batch_id: str) -> None:
        try:
            status = self.sfn().describe_execution(executionArn=self.execution_arn(batch_id))
        except self.sfn().exceptions.ExecutionDoesNotExist:
            return
        if status["status"] in {"FAILED", "TIMED_OUT", "ABORTED"}:
            raise LocalRunError(
                f"execution {batch_id} {status['status']}: "
                f"{status.get('error', '')} {status.get('cause', '')}"
            )

    def download_outputs(self, batch_id: str, prefix: str, target: Path) -> list[Path]:
        s3, written = self.s3(), []
        target.mkdir(parents=True, exist_ok=True)
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{prefix}{batch_id}/"):
            for obj in page.get("Contents", []):
                path = target / obj["Key"].rsplit("/", 1)[-1]
                s3.download_file(self.bucket, obj["Key"], str(path))
                written.append(path)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"reports/{batch_id}/"):
            for obj in page.get("Contents", []):
                path = target / "reports" / obj["Key"].rsplit("/", 1)[-1]
                path.parent.mkdir(exist_ok=True)
                s3.download_file(self.bucket, obj["Key"], str(path))
        return written


_LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


def _function_environment(stack: LocalStack) -> dict[str, str]:
    """Handlers run in one process, so their variables share os.environ; none may clash."""
    merged: dict[str, str] = {}
    for function in stack.functions:
        for key, value in function.environment.items():
            if key in merged and merged[key] != value:
                raise LocalRunError(f"functions disagree on {key}: cannot run them in-process")
            merged[key] = value
    return merged


def _start_sagemaker(
    stack: LocalStack, options: LocalOptions, endpoint: str, runtime: InProcessLambdaRuntime
) -> tuple[Any, dict[str, str]]:
    """The local async endpoint, when the stack deployed the SageMaker backend. Its state
    changes invoke the stack's endpoint observer, as the template's EventBridge rule does."""
    if not stack.sagemaker:
        return None, {}
    from imagebatch_local.fakes.sagemaker_endpoint import (
        AsyncEndpointConfig,
        LocalAsyncEndpoint,
    )

    observer = stack.physical.get("EndpointObserverFunction")

    def on_state_change(event: dict[str, Any]) -> None:
        if observer is None:
            return
        answer, failed = runtime.invoke(observer, event)
        if failed:
            raise LocalRunError(f"endpoint observer failed: {answer}")

    config = AsyncEndpointConfig(stack)
    null = options.renderer == "null"
    sagemaker = LocalAsyncEndpoint(
        config,
        Path(os.devnull) if null else options.model_dir or _tiny_model_dir(),
        endpoint,
        accelerator="null" if null else "diffusers",
        on_state_change=on_state_change,
        # The tiny model runs on one torch thread: that thread's CPU time is what the call
        # would take on an instance of its own, whatever else this machine is doing.
        clock=time.thread_time if options.model_dir is None else time.perf_counter,
        render_short_side=options.render_short_side,
    )
    url = sagemaker.start()
    return sagemaker, {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
        "AWS_ENDPOINT_URL_SAGEMAKER": url,
        # the local endpoint scales in after every result is recorded: nothing to wait for
        "OBSERVER_SETTLE_S": "0",
    }


_run_lock = threading.Lock()


def _tiny_model_dir() -> Path:
    from imagebatch_local.fakes.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


def _renderer(options: LocalOptions) -> Renderer:
    """The local Bedrock's renderer; torch and diffusers load only for a model."""
    if options.renderer not in RENDERERS:
        raise LocalRunError(f"renderer {options.renderer!r}: one of {', '.join(RENDERERS)}")
    if options.renderer == "null":
        return NullRenderer()
    from imagebatch_local.fakes.tiny_model import ImageRenderer, limit_threads_for_tiny_model

    _quiet_model_libraries()
    if options.model_dir is None:
        limit_threads_for_tiny_model()
    return ImageRenderer.from_model_dir(options.model_dir or _tiny_model_dir())


def _quiet_model_libraries() -> None:
    """CLIP warns of every long prompt; a local run shows progress instead."""
    import diffusers
    import transformers

    libraries: list[Any] = [transformers.logging, diffusers.utils.logging]
    for library_logging in libraries:
        library_logging.set_verbosity_error()
        library_logging.disable_progress_bar()


def _local_bedrock(options: LocalOptions) -> LocalBedrock:
    """The local Bedrock over options.renderer: the tiny model (or the model in
    options.model_dir), or the null renderer."""
    return LocalBedrock(
        _renderer(options),
        render_short_side=options.render_short_side,
        render_steps=options.render_steps,
        throttle_rate=options.throttle_rate,
        content_filter_rate=options.content_filter_rate,
        fault_seed=options.fault_seed,
    )


@contextmanager
def _deployed(options: LocalOptions, endpoint: str, bedrock: LocalBedrock) -> Iterator[LocalAws]:
    """The template's resources in moto, its handlers run in-process, its SQS event sources
    polled and, with the SageMaker backend, the local async endpoint; stopped after."""
    moto_workarounds.enable_state_machine_execution(endpoint)
    moto_workarounds.serialise_dynamodb_writes()
    moto_workarounds.honour_transaction_tokens()
    moto_workarounds.forward_task_failure_cause()
    moto_workarounds.iterate_distributed_map_items()
    moto_workarounds.name_lambda_access_denied_as_aws()
    errors: list[BaseException] = []
    moto_workarounds.invoke_s3_notifications_asynchronously(errors.append)
    stack = create_stack(
        options.template,
        endpoint,
        parameter_overrides=options.stack_parameters(),
        region=options.region,
    )
    iam = _iam_enforcer(stack, options)
    create_insider_role(boto3.client("iam", endpoint_url=endpoint, region_name=stack.region))
    moto_workarounds.authorize_sns_deliveries(_authorize_delivery(iam))
    map_runs: dict[str, moto_workarounds.MapRunCapture] = {}
    moto_workarounds.capture_map_runs(
        _authorize_map_run(iam), lambda run: map_runs.__setitem__(run.map_run_arn, run)
    )
    bedrock.add_inference_profiles(stack.inference_profiles)
    runtime = InProcessLambdaRuntime(stack.functions)
    moto_workarounds.run_lambdas_in_process(runtime.invoke)
    with enforcing(iam), executor_tasks_inherit_identity(), _chaos(options, runtime) as chaos:
        runtime.send_to_destination = _destination_sender(stack, endpoint)
        sagemaker, sagemaker_env = _start_sagemaker(stack, options, endpoint, runtime)
        sources = [SqsSource(*source, region=stack.region) for source in stack.sqs_sources]
        poller = SqsEventSourcePoller(runtime, sources, endpoint)
        poller.start()
        with process_environment(
            {**_function_environment(stack), **sagemaker_env, **options.function_environment}
        ):
            reset_clients()
            aws = LocalAws(
                endpoint, stack, runtime, bedrock, errors, iam, sagemaker, poller, map_runs, chaos
            )
            try:
                yield aws
                _raise_if_strict_checks_failed(aws)
            finally:
                reset_clients()
                poller.stop()
                if sagemaker is not None:
                    sagemaker.stop()


@contextmanager
def _chaos(options: LocalOptions, runtime: InProcessLambdaRuntime) -> Iterator[Chaos | None]:
    """The chaos mode, hooked before any handler builds a client; None without --chaos."""
    if options.chaos is None:
        yield None
        return
    chaos = Chaos(options.chaos)
    chaos.install()
    runtime.delivery_fault = chaos.delivery
    try:
        yield chaos
    finally:
        runtime.delivery_fault = None
        chaos.uninstall()


def _destination_sender(stack: LocalStack, endpoint: str) -> DestinationSender:
    """Lambda sends an on-failure record to its SQS destination with the function's execution
    role (Developer Guide, "Capturing records of Lambda asynchronous invocations"): the local
    IAM checks sqs:SendMessage on the queue against that role, as AWS would."""
    queue_urls = {stack.arns[q]: stack.physical[q] for q in stack.of_type("AWS::SQS::Queue")}
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=stack.region)

    def send(function: str, destination: str, record: str) -> None:
        with acting_as(function):
            sqs.send_message(QueueUrl=queue_urls[destination], MessageBody=record)

    return send


def _iam_enforcer(stack: LocalStack, options: LocalOptions) -> IamEnforcer:
    """The stack's roles (less any permission options.without_permissions removes) and its
    bucket, topic and queue policies."""
    roles = stack_roles(stack)
    for owner, action in options.without_permissions:
        if owner not in roles:
            raise LocalRunError(f"no role {owner} in the stack: {sorted(roles)}")
        roles[owner] = roles[owner].without(action)
    machines = list(stack.of_type("AWS::Serverless::StateMachine"))
    where = Where(
        stack.region,
        ACCOUNT_ID,
        tuple(stack.arns[m] for m in machines),
        tuple(stack.inference_profiles.items()),
    )
    return IamEnforcer(
        roles,
        where,
        machines[0] if len(machines) == 1 else None,
        stack_resource_policies(stack),
        outsiders={INSIDER: insider_role()},
    )


def _authorize_delivery(iam: IamEnforcer) -> Callable[[str, str], bool]:
    """SNS delivers to an SQS subscription as the service principal sns.amazonaws.com, with
    the topic as aws:SourceArn: the queue policy must allow it (SNS developer guide, "Fanout
    to Amazon SQS queues"). A refused delivery is recorded, and the message not delivered."""

    def authorize(topic_arn: str, queue_arn: str) -> bool:
        context = {"aws:SourceArn": topic_arn, "aws:SourceAccount": iam.where.account}
        return iam.service_check("sns.amazonaws.com", "sqs:SendMessage", queue_arn, context) is None

    return authorize


def _authorize_map_run(iam: IamEnforcer) -> Callable[[str, str], None]:
    """A Distributed Map starts its children with the state machine's role: it needs
    states:StartExecution on the state machine (Step Functions guide, "IAM policies for
    using Distributed Map states")."""

    def authorize(state_machine_arn: str, execution_arn: str) -> None:
        if iam.engine_role is None:
            raise LocalRunError("cannot tell which state machine runs a Distributed Map")
        denial = iam.check(iam.engine_role, "states:StartExecution", state_machine_arn)
        if denial is not None:
            raise LocalRunError(f"{execution_arn}: {denial.describe()}")

    return authorize


def _raise_if_strict_checks_failed(aws: LocalAws) -> None:
    """What the local AWS found that AWS would refuse, not yet reported: a denied call, a
    Step Functions limit crossed by any execution."""
    aws.raise_if_denied()
    violations = aws.all_limit_violations()
    if violations:
        raise LocalRunError("; ".join(v.describe() for v in violations))


def _refuse_a_busy_port(port: int) -> None:
    """moto's server binds on its own thread and, when the port is taken, never says it is
    ready: ThreadedMotoServer.start() would wait forever. Say so before starting it."""
    if port == 0:
        return
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as moto's server binds: a stack stopped moments ago leaves TIME_WAIT, not a listener
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise LocalRunError(
                f"port {port} is in use ({exc.strerror}): pick another --port"
            ) from exc


@contextmanager
def local_aws(options: LocalOptions) -> Iterator[LocalAws]:
    """Start moto, the local Bedrock and the template's resources; tear all down after."""
    from moto.server import ThreadedMotoServer

    # The moto server logs every request; a local run shows progress instead.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _refuse_a_busy_port(options.port)
    if not _run_lock.acquire(blocking=False):
        raise LocalRunError("one local AWS per process: the Lambda runtime patch is global")
    moto_workarounds.list_moto_modules_once()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=options.port, verbose=False)
    bedrock: LocalBedrock | None = None
    try:
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto's backends live in this process: start from nothing every time.
        moto_workarounds.reset_moto(endpoint)
        bedrock = _local_bedrock(options)
        env = {
            **_LOCAL_ENV,
            "AWS_DEFAULT_REGION": options.region,
            "AWS_REGION": options.region,
            "MOTO_PORT": str(port),
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.start(),
        }
        with (
            process_environment(env),
            answers_before_the_wait_are_kept(),
            each_attempt_gets_its_own_token(),
            _deployed(options, endpoint, bedrock) as aws,
        ):
            yield aws
    finally:
        if bedrock is not None:
            bedrock.stop()
        moto_workarounds.restore_all()
        server.stop()
        _run_lock.release()
