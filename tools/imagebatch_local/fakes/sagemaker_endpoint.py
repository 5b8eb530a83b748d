"""A local SageMaker asynchronous endpoint in front of the real serving application.

boto3's `sagemaker-runtime` client talks to it unchanged (`AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`):
`InvokeEndpointAsync` is answered 202 with the InferenceId body and the OutputLocation /
FailureLocation headers, as the restJson1 model says. Each request then does what SageMaker
does: read the input object from S3, POST it to the container's /invocations over HTTP, write
the response to S3OutputPath/<id>.out (or S3FailurePath/<id>-error.out) and publish the
success or error notification JSON to the topics of the endpoint config. Everything it needs
comes from template.yaml's Model, EndpointConfig and Endpoint.

The serving application is containers/serving's Flask app with the diffusers backend (or
the null backend, for benchmarks of the path around the model) on 127.0.0.1, started when
the first request arrives (a scale-out from zero, whose model load is the local cold start)
and stopped at the end (scale-in). As on AWS, the instance counts are what DescribeEndpoint
answers (the same server speaks the `sagemaker` JSON protocol for it), and each change is
announced as a "SageMaker Endpoint State Change" event to `on_state_change` (the local run
invokes the endpoint observer function with it, as the EventBridge rule would): attribution
happens in the stack's own observer, not here.
Fault injection for rehearsals: an input whose text contains `[[instance-failure]]` fails as
an instance that died mid-request would, without reaching the model.

Like the local Bedrock, it renders at a local scale (`render_short_side`): an image whose
short side is larger is made at its aspect ratio with that short side (a 1024x1024 bucket at
64x64), since the tiny model on a CPU takes minutes at full size. Its seconds are then those
of the small image; records keep the size the manifest asked for.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
from pydantic import ValidationError
from werkzeug.serving import BaseWSGIServer, make_server

from imagebatch.aws.s3_store import split_s3_uri
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    parse_buckets,
)
from imagebatch_local.cloud.lambda_runtime import acting_as, bind_identity
from imagebatch_local.cloud.local_stack import LocalStack
from imagebatch_local.fakes.bedrock_server import render_size
from imagebatch_local.fakes.loopback import serve_in_background, stop_serving
from imagebatch_local.template import ACCOUNT_ID

logger = logging.getLogger(__name__)

INSTANCE_FAILURE = "[[instance-failure]]"
# What SageMaker reports when the container answers with an error status.
MODEL_ERROR_REASON = (
    "ClientError: Received server error ({status}) from model. "
    "See the SageMaker Endpoint logs in your account for more information."
)


class LocalServingApp:
    """containers/serving's app on 127.0.0.1 (one 'instance'), with the diffusers backend or
    the null backend (`accelerator="null"`: no model, flat seed-coloured images)."""

    def __init__(
        self,
        model_dir: Path,
        environment: dict[str, str],
        execution_role: str | None = None,
        accelerator: str = "diffusers",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._model_dir = model_dir
        self._environment = environment
        # The container's own S3 writes and task heartbeats use the model's execution role.
        self._execution_role = execution_role
        self._accelerator = accelerator
        self._clock = clock
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        from imagebatch_serving.app import ServingSettings, create_app, load_engine

        settings = ServingSettings.from_env(
            {
                **self._environment,
                "SM_MODEL_DIR": str(self._model_dir),
                "IMAGEBATCH_ACCELERATOR": self._accelerator,
            }
        )
        role = self._execution_role
        engine = load_engine(
            settings,
            s3=bind_identity(boto3.client("s3"), role),
            sfn=bind_identity(boto3.client("stepfunctions"), role),
            clock=self._clock,
        )
        server = make_server("127.0.0.1", 0, create_app(engine), threaded=True)
        self._server = server
        self._thread = serve_in_background(server, "serving")
        return f"http://127.0.0.1:{server.server_port}"

    def stop(self) -> None:
        stop_serving(self._server, self._thread)
        self._server, self._thread = None, None


class AsyncEndpointConfig:
    """The parts of the template's SageMaker resources the local endpoint obeys."""

    def __init__(self, stack: LocalStack) -> None:
        by_type = {v["Type"]: v for v in stack.sagemaker.values()}
        endpoint = by_type["AWS::SageMaker::Endpoint"]
        config = by_type["AWS::SageMaker::EndpointConfig"]
        model = by_type["AWS::SageMaker::Model"]
        self.region = stack.region
        # SageMaker reads inputs, writes results and notifies with the model's execution role.
        self.execution_role: str | None = next(
            (k for k, arn in stack.arns.items() if arn == model.get("ExecutionRoleArn")), None
        )
        async_config = config["AsyncInferenceConfig"]
        output = async_config["OutputConfig"]
        notifications = output.get("NotificationConfig", {})
        self.endpoint_name: str = endpoint["Name"]
        self.output_path: str = output["S3OutputPath"].rstrip("/") + "/"
        self.failure_path: str = output.get("S3FailurePath", self.output_path).rstrip("/") + "/"
        self.success_topic: str | None = notifications.get("SuccessTopic")
        self.error_topic: str | None = notifications.get("ErrorTopic")
        self.max_concurrency = int(
            async_config.get("ClientConfig", {}).get("MaxConcurrentInvocationsPerInstance", 1)
        )
        self.instance_type: str = config["ProductionVariants"][0]["InstanceType"]
        self.environment = {
            k: str(v) for k, v in model["PrimaryContainer"].get("Environment", {}).items()
        }


class LocalAsyncEndpoint:
    def __init__(
        self,
        config: AsyncEndpointConfig,
        model_dir: Path,
        aws_endpoint: str,
        *,
        on_state_change: Callable[[dict[str, Any]], None] | None = None,
        accelerator: str = "diffusers",
        clock: Callable[[], float] = time.perf_counter,
        render_short_side: int | None = None,
    ) -> None:
        self.config = config
        self._on_state_change = on_state_change
        self.created = datetime.now(UTC)
        self.desired = 0
        self.current = 0
        self._short_side = render_short_side
        environment = dict(config.environment)
        if render_short_side is not None and environment.get("IMAGEBATCH_SHAPE_BUCKETS"):
            # the container checks sizes against its buckets: it is asked for the scaled ones
            buckets = [str(b) for b in parse_buckets(environment["IMAGEBATCH_SHAPE_BUCKETS"])]
            scaled = [
                "{}x{}".format(*self._local_size(b.width, b.height))
                for b in parse_buckets(environment["IMAGEBATCH_SHAPE_BUCKETS"])
            ]
            environment["IMAGEBATCH_SHAPE_BUCKETS"] = ",".join(dict.fromkeys(buckets + scaled))
        self._serving = LocalServingApp(
            model_dir, environment, config.execution_role, accelerator, clock
        )
        self._serving_url: str | None = None
        self._aws_endpoint = aws_endpoint
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix="async-invocation"
        )
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.completed = 0
        self.failed = 0
        self.errors: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = serve_in_background(self._server, "local-sagemaker-runtime")
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local endpoint is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        # before the server goes: the observer reads DescribeEndpoint from it at scale-in
        self.scale_in()
        stop_serving(self._server, self._thread)
        self._server, self._thread = None, None

    def _set_counts(self, desired: int, current: int) -> None:
        """What DescribeEndpoint answers from now on; the change is announced as SageMaker
        announces it on EventBridge."""
        self.desired, self.current = desired, current
        if self._on_state_change is not None:
            self._on_state_change(self.state_change_event())

    def state_change_event(self) -> dict[str, Any]:
        status = "UPDATING" if self.desired != self.current else "IN_SERVICE"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "SageMaker Endpoint State Change",
            "source": "aws.sagemaker",
            "account": ACCOUNT_ID,
            "time": _iso(datetime.now(UTC)),
            "region": self.config.region,
            "resources": [self.endpoint_arn],
            "detail": {
                "EndpointName": self.config.endpoint_name,
                "EndpointArn": self.endpoint_arn,
                "EndpointStatus": status,
            },
        }

    @property
    def endpoint_arn(self) -> str:
        name = self.config.endpoint_name.lower()
        return f"arn:aws:sagemaker:{self.config.region}:{ACCOUNT_ID}:endpoint/{name}"

    def describe_endpoint(self, name: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        """DescribeEndpoint's answer (the fields the observer and a user would read)."""
        if name != self.config.endpoint_name:
            return (
                400,
                {"x-amzn-ErrorType": "ValidationException"},
                {"__type": "ValidationException", "message": f"Could not find endpoint {name}."},
            )
        status = "Updating" if self.desired != self.current else "InService"
        return (
            200,
            {},
            {
                "EndpointName": name,
                "EndpointArn": self.endpoint_arn,
                "EndpointConfigName": f"{name}-config",
                "EndpointStatus": status,
                "CreationTime": self.created.timestamp(),
                "LastModifiedTime": datetime.now(UTC).timestamp(),
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "CurrentWeight": 1.0,
                        "DesiredWeight": 1.0,
                        "CurrentInstanceCount": self.current,
                        "DesiredInstanceCount": self.desired,
                    }
                ],
            },
        )

    def scale_in(self) -> None:
        """Stop the instance, as the scale-in alarm would once the backlog stays empty."""
        with self._lock:
            if self._serving_url is None:
                return
            self._set_counts(0, 1)
            self._serving.stop()
            self._serving_url = None
            self._set_counts(0, 0)

    def _instance_url(self) -> str:
        """The serving app's URL, starting it (a scale-out from zero) on first use: billed
        from the moment one is desired, serving once the model is loaded."""
        with self._lock:
            if self._serving_url is None:
                self._set_counts(1, 0)
                self._serving_url = self._serving.start()
                self._set_counts(1, 1)
            return self._serving_url

    # -- InvokeEndpointAsync ---------------------------------------------------------------

    def accept(
        self, endpoint_name: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if endpoint_name != self.config.endpoint_name:
            return (
                400,
                {"x-amzn-ErrorType": "ValidationError"},
                {"message": f"Endpoint {endpoint_name} of account {ACCOUNT_ID} not found."},
            )
        input_location = headers.get("x-amzn-sagemaker-inputlocation")
        if not input_location:
            return (
                400,
                {"x-amzn-ErrorType": "ValidationError"},
                {
                    "message": "1 validation error detected: Value null at 'inputLocation' failed "
                    "to satisfy constraint: Member must not be null"
                },
            )
        inference_id = headers.get("x-amzn-sagemaker-inference-id") or str(uuid.uuid4())
        output_location = f"{self.config.output_path}{inference_id}.out"
        failure_location = f"{self.config.failure_path}{inference_id}-error.out"
        request = {
            "inference_id": inference_id,
            "input_location": input_location,
            "content_type": headers.get("x-amzn-sagemaker-content-type", "application/json"),
            "accept": headers.get("x-amzn-sagemaker-accept", "application/json"),
            "custom_attributes": headers.get("x-amzn-sagemaker-custom-attributes"),
            "received": datetime.now(UTC),
            "output_location": output_location,
            "failure_location": failure_location,
        }
        self._pool.submit(self._process, request)
        return (
            202,
            {
                "X-Amzn-SageMaker-OutputLocation": output_location,
                "X-Amzn-SageMaker-FailureLocation": failure_location,
            },
            {"InferenceId": inference_id},
        )

    def _process(self, request: dict[str, Any]) -> None:
        try:
            with acting_as(self.config.execution_role):
                self._invoke(request)
        except Exception as exc:  # reported: a lost request must be visible
            logger.exception("local async invocation %s failed", request["inference_id"])
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _invoke(self, request: dict[str, Any]) -> None:
        s3 = boto3.client("s3", endpoint_url=self._aws_endpoint, region_name=self.config.region)
        bucket, key = split_s3_uri(request["input_location"])
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if INSTANCE_FAILURE.encode() in body:
            status, content_type, answer = (
                500,
                "application/json",
                json.dumps(
                    {"error": "InstanceFailure", "message": "the instance stopped mid-request"}
                ).encode(),
            )
        else:
            status, content_type, answer = self._post(request, self._at_local_scale(body))
        ok = status == 200
        location = request["output_location"] if ok else request["failure_location"]
        out_bucket, out_key = split_s3_uri(location)
        s3.put_object(Bucket=out_bucket, Key=out_key, Body=answer, ContentType=content_type)
        notification = self._notification(request, status, content_type, location)
        topic = self.config.success_topic if ok else self.config.error_topic
        if topic:
            sns = boto3.client(
                "sns", endpoint_url=self._aws_endpoint, region_name=self.config.region
            )
            sns.publish(TopicArn=topic, Message=json.dumps(notification))
        with self._lock:
            if ok:
                self.completed += 1
            else:
                self.failed += 1

    def _notification(
        self, request: dict[str, Any], status: int, content_type: str, location: str
    ) -> dict[str, Any]:
        """The success or error notification SageMaker publishes for one request, in the
        shapes of the SageMaker developer guide ("Check prediction results"): a success names
        its outputLocation under responseParameters; an error carries a failureReason, its
        requestParameters without the content type, and no responseParameters at all (the
        FailureLocation is only in InvokeEndpointAsync's answer)."""
        if status == 200:
            notification: dict[str, Any] = {
                "awsRegion": self.config.region,
                "eventTime": _iso(datetime.now(UTC)),
                "receivedTime": _iso(request["received"]),
                "invocationStatus": "Completed",
                "requestParameters": {
                    "contentType": request["content_type"],
                    "endpointName": self.config.endpoint_name,
                    "inputLocation": request["input_location"],
                },
                "responseParameters": {"contentType": content_type, "outputLocation": location},
            }
        else:
            notification = {
                "awsRegion": self.config.region,
                "eventTime": _iso(datetime.now(UTC)),
                "receivedTime": _iso(request["received"]),
                "invocationStatus": "Failed",
                "failureReason": MODEL_ERROR_REASON.format(status=status),
                "requestParameters": {
                    "endpointName": self.config.endpoint_name,
                    "inputLocation": request["input_location"],
                },
            }
        notification.update(
            {
                "inferenceId": request["inference_id"],
                "eventVersion": "1.0",
                "eventSource": "aws:sagemaker",
                "eventName": "InferenceResult",
            }
        )
        AsyncNotification.model_validate(notification)  # the shape record_result will parse
        return notification

    def _local_size(self, width: int, height: int) -> tuple[int, int]:
        if self._short_side is None or min(width, height) <= self._short_side:
            return width, height
        return render_size(f"{width}:{height}", self._short_side)

    def _at_local_scale(self, body: bytes) -> bytes:
        """The request with each image at the local scale (the module docstring says why)."""
        if self._short_side is None:
            return body
        try:
            invocation = ChunkInvocation.model_validate_json(body)
        except ValidationError:
            return body  # the container answers a malformed request itself
        images = []
        for job in invocation.images:
            width, height = self._local_size(job.width, job.height)
            images.append(job.model_copy(update={"width": width, "height": height}))
        if images == invocation.images:
            return body
        return invocation.model_copy(update={"images": images}).model_dump_json().encode()

    def _post(self, request: dict[str, Any], body: bytes) -> tuple[int, str, bytes]:
        headers = {"Content-Type": request["content_type"], "Accept": request["accept"]}
        if request["custom_attributes"]:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = request["custom_attributes"]
        http_request = urllib.request.Request(  # noqa: S310 - our loopback serving app
            f"{self._instance_url()}/invocations", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(http_request, timeout=3600) as response:  # noqa: S310
                return (
                    response.status,
                    response.headers.get("Content-Type", "application/json"),
                    response.read(),
                )
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", "application/json"), error.read()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _handler_for(endpoint: LocalAsyncEndpoint) -> type[BaseHTTPRequestHandler]:
    prefix, suffix = "/endpoints/", "/async-invocations"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            if self.headers.get("X-Amz-Target") == "SageMaker.DescribeEndpoint":
                # the control plane's JSON 1.1 protocol (AWS_ENDPOINT_URL_SAGEMAKER)
                name = json.loads(body or b"{}").get("EndpointName", "")
                self._send(*endpoint.describe_endpoint(name))
                return
            if not (path.startswith(prefix) and path.endswith(suffix)):
                self._send(404, {"x-amzn-ErrorType": "UnknownOperationException"}, {})
                return
            name = unquote(path[len(prefix) : -len(suffix)])
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(*endpoint.accept(name, headers))

        def _send(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler
