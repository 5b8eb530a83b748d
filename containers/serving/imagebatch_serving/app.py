"""The SageMaker container contract: HTTP on 8080, GET /ping, POST /invocations.

SageMaker extracts model.tar.gz into /opt/ml/model and starts the container with `serve`;
the image runs gunicorn on this Flask app: one worker per model replica (one per NeuronCore on
Inferentia2, else one; gunicorn_conf.py says how), each worker's calls one at a time.
Asynchronous inference POSTs the request object (a ChunkInvocation) to /invocations and
stores whatever comes back: 200 -> S3OutputPath and the success topic, anything else ->
S3FailurePath and the error topic.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imagebatch.models.sagemaker_contract import (
    ChunkInvocation,
    InvocationResult,
    parse_buckets,
)
from imagebatch_serving.engine import (
    CallFailedError,
    EncodePlace,
    Heartbeat,
    PipelineBackend,
    S3Sink,
    ServingEngine,
)
from imagebatch_serving.logs import configure_json_logging
from imagebatch_serving.null_backend import NullBackend

logger = logging.getLogger(__name__)

JSON = "application/json"


class ServingSettings(BaseModel):
    """Container settings from its environment (the Model's Environment in template.yaml)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")
    model_dir: Path = Field(alias="SM_MODEL_DIR", default=Path("/opt/ml/model"))
    accelerator: str = Field(alias="IMAGEBATCH_ACCELERATOR", default="auto")
    max_batch: int = Field(alias="IMAGEBATCH_MAX_BATCH", default=4, ge=1, le=64)
    shape_buckets: str = Field(alias="IMAGEBATCH_SHAPE_BUCKETS", default="")
    heartbeat: bool = Field(alias="IMAGEBATCH_HEARTBEAT", default=True)
    # The Model's Environment sets AWS_REGION (template.yaml); AWS_DEFAULT_REGION elsewhere.
    region: str | None = Field(alias="AWS_REGION", default=None)
    default_region: str | None = Field(alias="AWS_DEFAULT_REGION", default=None)
    log_level: str = Field(alias="LOG_LEVEL", default="INFO")
    # torch's intra-op threads on the CPU backend; 0: every core this process may use but
    # one, which the request threads (HTTP, JSON, S3) need (bench/README.md, "Serving threads").
    torch_threads: int = Field(alias="IMAGEBATCH_TORCH_THREADS", default=0, ge=0)
    # Where a call's PNGs are encoded (engine.EncodePlace).
    encode: EncodePlace = Field(alias="IMAGEBATCH_ENCODE", default="auto")
    # NeuronCores to serve from, one worker and model replica each (gunicorn_conf.py);
    # ml.inf2.xlarge's one chip has two.
    neuron_cores: int = Field(alias="IMAGEBATCH_NEURON_CORES", default=2, ge=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        return cls.model_validate(dict(os.environ if environ is None else environ))

    def aws_region(self) -> str:
        """The region for the container's AWS clients: said, never guessed. A Step Functions
        client with no region fails at its first heartbeat, deep inside a chunk."""
        region = self.region or self.default_region
        if not region:
            raise ValueError(
                "AWS_REGION is not set: the SageMaker Model's Environment must name the "
                "stack's region (template.yaml sets it)"
            )
        return region

    def uses_neuron(self) -> bool:
        """The Neuron backend: named, or `auto` where the Neuron SDK is installed (looked up,
        not imported: gunicorn's master asks this before any worker loads torch)."""
        if self.accelerator == "auto":
            return importlib.util.find_spec("torch_neuronx") is not None
        return self.accelerator == "neuron"

    def torch_thread_count(self, usable_cores: int) -> int:
        """torch's intra-op threads: the setting, else the usable cores less one (at least 1)."""
        return self.torch_threads or max(1, usable_cores - 1)


def load_engine(
    settings: ServingSettings,
    *,
    s3: Any = None,
    sfn: Any = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ServingEngine:
    """The engine over the configured backend. `clock` times each pipeline call: wall time
    on an instance of its own (what SageMaker bills); the local endpoint, on a shared
    machine, passes the thread's CPU time instead."""
    import boto3

    heartbeat = None
    if settings.heartbeat:
        heartbeat = _heartbeat(
            sfn or boto3.client("stepfunctions", region_name=settings.aws_region())
        )
    if s3 is None:
        s3 = boto3.client("s3", region_name=settings.region or settings.default_region)
    return ServingEngine(
        load_backend(settings), S3Sink(s3), heartbeat=heartbeat, clock=clock, encode=settings.encode
    )


def load_backend(settings: ServingSettings) -> PipelineBackend:
    """The backend IMAGEBATCH_ACCELERATOR names: neuron, diffusers, auto (neuron where the
    Neuron SDK is installed), or null (no model: flat seed-coloured images, for benchmarks of
    the serving path). torch loads only for the first three."""
    buckets = parse_buckets(settings.shape_buckets)
    if settings.accelerator == "null":
        return NullBackend(max_batch=settings.max_batch, buckets=buckets)
    from imagebatch_serving.backends import DiffusersBackend, NeuronBackend, set_torch_threads

    if settings.uses_neuron():
        return NeuronBackend.load(settings.model_dir)
    backend = DiffusersBackend.load(
        settings.model_dir, max_batch=settings.max_batch, buckets=buckets
    )
    if backend.accelerator == "cpu":
        set_torch_threads(settings.torch_thread_count(len(os.sched_getaffinity(0))))
    return backend


def _heartbeat(sfn: Any) -> Heartbeat:
    def beat(task_token: str) -> None:
        try:
            sfn.send_task_heartbeat(taskToken=task_token)
        except Exception as exc:  # noqa: BLE001 - a missed heartbeat must not fail the images
            logger.warning("task heartbeat failed: %s", exc)

    return beat


def _error(
    status: int, kind: str, message: str, partial: InvocationResult | None = None
) -> Response:
    body = ErrorBody(error=kind, message=message, partial=partial)
    return Response(body.model_dump_json(exclude_none=True), status=status, mimetype=JSON)


class ErrorBody(BaseModel):
    """What a failed request returns; SageMaker stores it at the failure location."""

    error: str
    message: str
    # What the request did before it failed: the images it made and every call's seconds
    # (the failed call's too), so record_result charges the instance time and keeps the
    # images; the retry makes only the rest.
    partial: InvocationResult | None = None


def create_app(engine: ServingEngine) -> Flask:
    app = Flask("imagebatch_serving")

    @app.get("/ping")
    def ping() -> Response:
        # The model loads before the app exists: answering at all means healthy.
        return Response("", status=200)

    @app.post("/invocations")
    def invocations() -> Response:
        try:
            invocation = ChunkInvocation.model_validate_json(request.get_data())
        except ValidationError as exc:
            return _error(400, "InvalidRequest", str(exc))
        try:
            result = engine.run(invocation)
        except CallFailedError as exc:
            logger.exception("chunk %s/%s failed", invocation.batch_id, invocation.chunk_id)
            return _error(500, type(exc.cause).__name__, str(exc.cause)[:2000], exc.partial)
        except Exception as exc:
            # A 500 makes SageMaker write the failure object and publish to the error
            # topic; the state machine retries the chunk.
            logger.exception("chunk %s/%s failed", invocation.batch_id, invocation.chunk_id)
            return _error(500, type(exc).__name__, str(exc)[:2000])
        return Response(result.model_dump_json(), status=200, mimetype=JSON)

    return app


def create_app_from_env() -> Flask:
    """gunicorn's entry point in the images (see containers/serving/serve)."""
    settings = ServingSettings.from_env()
    configure_json_logging(settings.log_level)
    return create_app(load_engine(settings))
