"""One chunk in, PNGs in S3 and a small JSON result out: micro-batching and per-image seeds.

Images of a chunk that share width, height, steps and guidance run as one pipeline call, up to
the backend's batch size (for Neuron: the batch size it was compiled for). Every image gets its
own `torch.Generator` seeded with its seed, so an image depends on its seed, not on which
neighbours shared its call (up to float reduction order, which varies with batch size).

A capped batch's request carries `max_seconds`, the instance-seconds its budget hold covers.
The engine starts no call it expects to end past them (expected: the last call of the same
shape in this request, else the request's own figure, the one the hold was sized with) and
stops a call that runs past them at its next denoising step; images it did not make are left
out of the result, and every call's seconds are in it, so the ledger charges all the instance
time the request used, and a stopped call tells the ledger how slow the shape really is.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from PIL import Image

from imagebatch.aws.s3_store import image_key
from imagebatch.models.records import FailureClass, ImageJob, image_metadata
from imagebatch.models.sagemaker_contract import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
    ShapeBucket,
    bucket_error,
    shape_key,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "DEFAULT_GUIDANCE",
    "DEFAULT_STEPS",
    "CallShape",
    "ServingEngine",
    "group_by_shape",
    "micro_batches",
    "negative_prompts_of",
]

#: Asked between denoising steps: True stops the call (the request's held seconds ran out).
StopCheck = Callable[[], bool]

#: Where a call's PNGs are encoded. "worker": under the inference lock, right after the call,
#: so encoding never runs beside a pipeline call: on a CPU backend the call's torch threads
#: already hold every core left to it, and a request thread encoding beside them slows the
#: call more than the overlap gains (bench/README.md, "Serving threads"). "request": in the
#: request's thread after the lock is released, overlapping the next call: an accelerator's
#: call leaves the CPU idle, so encoding there is free. "auto": "worker" on the CPU backend,
#: "request" on CUDA and Neuron.
EncodePlace = Literal["auto", "worker", "request"]


@dataclass(frozen=True, slots=True)
class CallShape:
    width: int
    height: int
    steps: int
    guidance: float


class PipelineBackend(Protocol):
    """A text-to-image pipeline with a fixed largest batch (Neuron: its compiled batch)."""

    @property
    def accelerator(self) -> str: ...

    @property
    def max_batch(self) -> int: ...

    @property
    def buckets(self) -> tuple[ShapeBucket, ...]: ...

    def generate(
        self,
        shape: CallShape,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | None,
        seeds: Sequence[int],
        should_stop: StopCheck | None = None,
    ) -> list[Image.Image]: ...


class ImageSink(Protocol):
    def put_png(self, bucket: str, key: str, png: bytes, metadata: dict[str, str]) -> None: ...


class S3Sink:
    """Writes PNGs straight to the batch's output prefix, with the Bedrock path's metadata."""

    def __init__(self, client: Any) -> None:
        self._s3 = client

    def put_png(self, bucket: str, key: str, png: bytes, metadata: dict[str, str]) -> None:
        self._s3.put_object(
            Bucket=bucket, Key=key, Body=png, ContentType="image/png", Metadata=metadata
        )


class DirectorySink:
    """Writes PNGs under a local folder (benchmarks): <root>/<bucket>/<key>."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def put_png(self, bucket: str, key: str, png: bytes, metadata: dict[str, str]) -> None:
        path = self._root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)


Heartbeat = Callable[[str], None]


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes that depend only on the pixels: fixed compression, no metadata chunks."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def shape_of(job: ImageJob) -> CallShape:
    return CallShape(
        width=job.width,
        height=job.height,
        steps=job.steps or DEFAULT_STEPS,
        guidance=DEFAULT_GUIDANCE if job.guidance is None else job.guidance,
    )


def group_by_shape(
    items: Sequence[T], shape: Callable[[T], CallShape], max_batch: int
) -> list[list[T]]:
    """Group items of one shape into calls of at most max_batch, keeping first-seen order.

    Generic over the item so the local Bedrock's renderer (tools/imagebatch_local/fakes)
    batches its requests exactly as this engine batches a chunk's jobs.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    open_batches: dict[CallShape, list[T]] = {}
    batches: list[list[T]] = []
    for item in items:
        key = shape(item)
        batch = open_batches.get(key)
        if batch is None or len(batch) >= max_batch:
            batch = []
            open_batches[key] = batch
            batches.append(batch)
        batch.append(item)
    return batches


def negative_prompts_of(negatives: Sequence[str | None]) -> list[str] | None:
    """A call's negative prompts: one per image ('' where an image has none), or None when
    no image has one, so the pipeline keeps its own default."""
    values = [negative or "" for negative in negatives]
    return values if any(values) else None


def micro_batches(jobs: Sequence[ImageJob], max_batch: int) -> list[list[ImageJob]]:
    """A chunk's jobs as pipeline calls: one shape per call, at most max_batch each."""
    return group_by_shape(jobs, shape_of, max_batch)


class CallFailedError(Exception):
    """A pipeline call raised: the request fails, carrying what it did before (`partial`)."""

    def __init__(self, cause: BaseException, partial: InvocationResult) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.partial = partial


@dataclass
class _Budget:
    """The request's held instance-seconds and what its calls have used of them."""

    max_seconds: float | None
    expected: dict[str, float]
    spent: float = 0.0
    # Seconds per image of the last call of each shape in this request.
    timed: dict[str, float] = field(default_factory=dict)

    def allows(self, predicted_seconds: float) -> bool:
        return self.max_seconds is None or self.spent + predicted_seconds <= self.max_seconds


class ServingEngine:
    """Runs chunks against one loaded backend; one pipeline call at a time per process."""

    def __init__(
        self,
        backend: PipelineBackend,
        sink: ImageSink,
        *,
        max_batch: int | None = None,
        heartbeat: Heartbeat | None = None,
        clock: Callable[[], float] = time.perf_counter,
        encode: EncodePlace = "auto",
    ) -> None:
        self.backend = backend
        self.max_batch = min(max_batch or backend.max_batch, backend.max_batch)
        self.encode_in_worker = encode == "worker" or (
            encode == "auto" and backend.accelerator == "cpu"
        )
        self._sink = sink
        self._heartbeat = heartbeat
        self._clock = clock
        # A diffusers pipeline mutates its scheduler per call and a NeuronCore runs one
        # model at a time: concurrent requests queue here, not inside the pipeline.
        self._lock = threading.Lock()

    def run(self, invocation: ChunkInvocation) -> InvocationResult:
        served: dict[str, ServedImage] = {}
        runnable: list[ImageJob] = []
        for job in invocation.images:
            reason = bucket_error(job.width, job.height, self.backend.buckets)
            if reason is None:
                runnable.append(job)
            else:
                served[job.image_id] = ServedImage(
                    image_id=job.image_id,
                    status="FAILED",
                    seed=job.seed,
                    failure_class=FailureClass.INVALID,
                    failure_reason=reason,
                )
        calls: list[ServingCall] = []
        budget = _Budget(invocation.max_seconds, dict(invocation.seconds_per_image))
        stopped: str | None = None
        for batch in micro_batches(runnable, self.max_batch):
            if not budget.allows(self._predicted(batch, budget)):
                stopped = (
                    f"the request's budget hold covers {budget.max_seconds:.3f} instance-"
                    f"seconds; {budget.spent:.3f} used, the next call would not fit"
                )
                break
            try:
                call, pngs = self._run_call(invocation, batch, len(calls), budget)
            except _FailedCall as failed:
                calls.append(failed.call)
                partial = self._result(invocation, served, calls, stopped=None)
                raise CallFailedError(failed.cause, partial) from failed.cause
            calls.append(call)
            budget.spent += call.seconds
            if call.interrupted:
                stopped = (
                    f"call {call.call} was stopped at a step: the request's budget hold of "
                    f"{budget.max_seconds:.3f} instance-seconds ran out"
                )
                break
            for job in batch:
                served[job.image_id] = ServedImage(
                    image_id=job.image_id,
                    status="SUCCEEDED",
                    seed=job.seed,
                    key=image_key(invocation.output_prefix, invocation.batch_id, job.image_id),
                    inference_seconds=call.seconds / call.images,
                    call=call.call,
                    png_bytes=pngs[job.image_id],
                )
            if self._heartbeat is not None and invocation.task_token:
                self._heartbeat(invocation.task_token)
        return self._result(invocation, served, calls, stopped=stopped)

    def _result(
        self,
        invocation: ChunkInvocation,
        served: dict[str, ServedImage],
        calls: list[ServingCall],
        *,
        stopped: str | None,
    ) -> InvocationResult:
        return InvocationResult(
            batch_id=invocation.batch_id,
            chunk_id=invocation.chunk_id,
            attempt=invocation.attempt,
            accelerator=self.backend.accelerator,
            max_batch=self.max_batch,
            images=[served[job.image_id] for job in invocation.images if job.image_id in served],
            calls=list(calls),
            stopped=stopped,
        )

    @staticmethod
    def _predicted(batch: list[ImageJob], budget: _Budget) -> float:
        """Seconds the call is expected to take: as the request's last call of the shape
        took, else the request's own figure (0 when neither knows the shape)."""
        key = shape_key(batch[0])
        per_image = budget.timed.get(key, budget.expected.get(key, 0.0))
        return per_image * len(batch)

    def _run_call(
        self, invocation: ChunkInvocation, batch: list[ImageJob], index: int, budget: _Budget
    ) -> tuple[ServingCall, dict[str, int]]:
        shape = shape_of(batch[0])
        stop_flag: list[bool] = []
        steps_done: list[int] = []
        with self._lock:
            started = self._clock()

            def should_stop() -> bool:
                steps_done.append(1)  # asked once at the end of each step
                if budget.max_seconds is None:
                    return False
                if budget.spent + (self._clock() - started) >= budget.max_seconds:
                    stop_flag.append(True)
                    return True
                return False

            try:
                images = self.backend.generate(
                    shape,
                    [job.prompt for job in batch],
                    negative_prompts_of([job.negative_prompt for job in batch]),
                    [job.seed for job in batch],
                    should_stop,
                )
            except Exception as exc:
                # The instance-seconds the call used are spent all the same.
                raise _FailedCall(
                    exc, self._call(index, shape, batch, self._clock() - started)
                ) from exc
            # Measured around the pipeline only: the instance-seconds the images consumed.
            seconds = self._clock() - started
            encoded = (
                [encode_png(image) for image in images]
                if self.encode_in_worker and not stop_flag
                else None
            )
        call = self._call(index, shape, batch, seconds, interrupted=bool(stop_flag))
        if call.interrupted:
            call = call.model_copy(update={"steps_done": len(steps_done)})
        if call.interrupted:
            logger.warning("call %d stopped: the request's held seconds ran out", index)
            return call, {}
        budget.timed[call.key] = seconds / len(batch)
        if len(images) != len(batch):
            raise RuntimeError(f"pipeline returned {len(images)} images for {len(batch)}")
        pngs = self._store(invocation, batch, encoded or [encode_png(image) for image in images])
        logger.info(
            "call %d: %d image(s) %dx%d/%d steps in %.3f s",
            index,
            len(batch),
            shape.width,
            shape.height,
            shape.steps,
            seconds,
        )
        return call, pngs

    def _store(
        self, invocation: ChunkInvocation, batch: list[ImageJob], pngs: list[bytes]
    ) -> dict[str, int]:
        """Each image's PNG to the sink at its key; its size in bytes by image id."""
        sizes: dict[str, int] = {}
        for job, png in zip(batch, pngs, strict=True):
            key = image_key(invocation.output_prefix, invocation.batch_id, job.image_id)
            self._sink.put_png(
                invocation.bucket, key, png, image_metadata(invocation.batch_id, job, job.seed)
            )
            sizes[job.image_id] = len(png)
        return sizes

    @staticmethod
    def _call(
        index: int,
        shape: CallShape,
        batch: list[ImageJob],
        seconds: float,
        *,
        interrupted: bool = False,
    ) -> ServingCall:
        return ServingCall(
            call=index,
            width=shape.width,
            height=shape.height,
            steps=shape.steps,
            cfg=shape.guidance > 1,
            images=len(batch),
            seconds=max(0.0, seconds),
            interrupted=interrupted,
        )


class _FailedCall(Exception):
    def __init__(self, cause: BaseException, call: ServingCall) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.call = call
