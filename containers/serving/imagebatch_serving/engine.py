"""One chunk in, PNGs in S3 and a small JSON result out: micro-batching and per-image seeds.

Images of a chunk that share width, height, steps and guidance run as one pipeline call, up to
the backend's batch size (for Neuron: the batch size it was compiled for). Every image gets its
own `torch.Generator` seeded with its seed, so an image depends on its seed, not on which
neighbours shared its call (up to float reduction order, which varies with batch size).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from PIL import Image

from imagebatch.aws.s3_store import image_key
from imagebatch.models.records import FailureClass, ImageJob, image_metadata
from imagebatch.models.sagemaker_contract import (
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
    ShapeBucket,
    bucket_error,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5


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

    Generic over the item so the local Bedrock's renderer (tools/imagebatch_cli/local/fakes)
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


class ServingEngine:
    """Runs chunks against one loaded backend; one pipeline call at a time per process."""

    def __init__(
        self,
        backend: PipelineBackend,
        sink: ImageSink,
        *,
        max_batch: int | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.backend = backend
        self.max_batch = min(max_batch or backend.max_batch, backend.max_batch)
        self._sink = sink
        self._heartbeat = heartbeat
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
        for batch in micro_batches(runnable, self.max_batch):
            call = self._run_call(invocation, batch, len(calls))
            calls.append(call)
            for job in batch:
                served[job.image_id] = ServedImage(
                    image_id=job.image_id,
                    status="SUCCEEDED",
                    seed=job.seed,
                    key=image_key(invocation.output_prefix, invocation.batch_id, job.image_id),
                    inference_seconds=call.seconds / call.images,
                    call=call.call,
                )
            if self._heartbeat is not None and invocation.task_token:
                self._heartbeat(invocation.task_token)
        return InvocationResult(
            batch_id=invocation.batch_id,
            chunk_id=invocation.chunk_id,
            attempt=invocation.attempt,
            accelerator=self.backend.accelerator,
            max_batch=self.max_batch,
            images=[served[job.image_id] for job in invocation.images],
            calls=calls,
        )

    def _run_call(
        self, invocation: ChunkInvocation, batch: list[ImageJob], index: int
    ) -> ServingCall:
        shape = shape_of(batch[0])
        with self._lock:
            started = time.perf_counter()
            images = self.backend.generate(
                shape,
                [job.prompt for job in batch],
                negative_prompts_of([job.negative_prompt for job in batch]),
                [job.seed for job in batch],
            )
            # Measured around the pipeline only: the instance-seconds the images consumed.
            seconds = time.perf_counter() - started
        if len(images) != len(batch):
            raise RuntimeError(f"pipeline returned {len(images)} images for {len(batch)}")
        for job, image in zip(batch, images, strict=True):
            key = image_key(invocation.output_prefix, invocation.batch_id, job.image_id)
            self._sink.put_png(
                invocation.bucket,
                key,
                encode_png(image),
                image_metadata(invocation.batch_id, job, job.seed),
            )
        logger.info(
            "call %d: %d image(s) %dx%d/%d steps in %.3f s",
            index,
            len(batch),
            shape.width,
            shape.height,
            shape.steps,
            seconds,
        )
        return ServingCall(
            call=index,
            width=shape.width,
            height=shape.height,
            steps=shape.steps,
            images=len(batch),
            seconds=seconds,
        )
