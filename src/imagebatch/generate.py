"""One chunk: make its images, store them, commit their costs once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from aws_lambda_powertools import Logger

from imagebatch.bedrock import GeneratedImage, ImageGenerationError
from imagebatch.catalogue import ModelCatalogue
from imagebatch.ledger import Ledger
from imagebatch.records import (
    ChunkFile,
    ChunkResult,
    ChunkTask,
    FailureClass,
    ImageJob,
    ImageOutcome,
)
from imagebatch.retry import AdaptiveConcurrency, BackoffPolicy, RetryingBackend
from imagebatch.storage import BatchStore, image_key

logger = Logger(child=True)


class ImageBackend(Protocol):
    def generate(self, job: ImageJob) -> GeneratedImage: ...


class ChunkUnfinished(Exception):
    """Some images were not made this time (throttled, out of time); Step Functions retries.

    The message is JSON {"unfinished": {image_id: failure_class}} so that, if the retries
    run out, finalize records each image with the class it last failed with.
    """

    def __init__(self, unfinished: dict[str, FailureClass]) -> None:
        super().__init__(json.dumps({"unfinished": {k: v.value for k, v in unfinished.items()}}))
        self.unfinished = unfinished


class _Unfinished:
    def __init__(self, failure_class: FailureClass) -> None:
        self.failure_class = failure_class


def generate_chunk(
    task: ChunkTask,
    *,
    store: BatchStore,
    ledger: Ledger,
    backend: ImageBackend,
    catalogue: ModelCatalogue,
    concurrency: int,
    time_left_ms: Callable[[], int],
    commit_reserve_ms: int,
    retry_policy: BackoffPolicy | None = None,
) -> ChunkResult:
    chunk = store.get_chunk(task.chunk.key)
    done = ledger.recorded_image_ids(task.batch_id, [job.image_id for job in chunk.images])
    todo = [job for job in chunk.images if job.image_id not in done]
    # The batch's quota-derived share (ingest) caps the function's configured concurrency.
    ceiling = max(1, min(concurrency, task.chunk_concurrency or concurrency))
    limiter = AdaptiveConcurrency(initial=ceiling, maximum=ceiling)
    retrying = RetryingBackend(
        backend,
        limiter,
        retry_policy or BackoffPolicy(),
        time_left_ms=time_left_ms,
        reserve_ms=commit_reserve_ms,
    )

    def make(job: ImageJob) -> ImageOutcome | _Unfinished:
        if time_left_ms() < commit_reserve_ms:
            return _Unfinished(FailureClass.TIMEOUT)
        return _make_image(job, chunk, store, retrying, catalogue)

    # One thread per slot of the ceiling; the limiter decides how many of them call at once.
    with ThreadPoolExecutor(max_workers=max(1, min(ceiling, len(todo)))) as pool:
        results = list(pool.map(make, todo))

    outcomes = [r for r in results if isinstance(r, ImageOutcome)]
    ledger.commit_images(task.batch_id, outcomes)
    unfinished = {
        job.image_id: r.failure_class
        for job, r in zip(todo, results, strict=True)
        if isinstance(r, _Unfinished)
    }
    logger.info(
        "chunk committed",
        extra={
            "chunk_id": chunk.chunk_id,
            "committed": len(outcomes),
            "already_done": len(done),
            "unfinished": len(unfinished),
            "throttles": limiter.throttles,
            "concurrency_lowest": limiter.lowest,
        },
    )
    if unfinished:
        raise ChunkUnfinished(unfinished)
    return ChunkResult(
        chunk_id=chunk.chunk_id,
        succeeded=sum(1 for o in outcomes if o.status == "SUCCEEDED"),
        failed=sum(1 for o in outcomes if o.status == "FAILED"),
        cost_micro_usd=sum(o.cost_micro_usd for o in outcomes),
        skipped_already_done=len(done),
    )


def _make_image(
    job: ImageJob,
    chunk: ChunkFile,
    store: BatchStore,
    backend: ImageBackend,
    catalogue: ModelCatalogue,
) -> ImageOutcome | _Unfinished:
    batch_id, chunk_id = chunk.batch_id, chunk.chunk_id
    base = {
        "image_id": job.image_id,
        "item_id": job.item_id,
        "chunk_id": chunk_id,
        "model": job.model,
        "backend": "bedrock",
        "prompt_sha256": job.prompt_sha256,
    }
    started = time.monotonic()
    try:
        image = backend.generate(job)
    except ImageGenerationError as exc:
        if exc.transient:
            return _Unfinished(exc.failure_class)
        logger.warning("image failed", extra={"image_id": job.image_id, "reason": exc.reason})
        return ImageOutcome(
            **base,
            status="FAILED",
            seed=job.seed,
            failure_class=exc.failure_class,
            failure_reason=exc.reason[:1000],
        )
    key = image_key(chunk.output_prefix, batch_id, job.image_id)
    store.put_image(
        key,
        image.png,
        {
            "batch-id": batch_id,
            "item-id": job.item_id,
            "model": job.model,
            "seed": str(image.seed),
            "prompt-sha256": job.prompt_sha256,
        },
    )
    spec = catalogue.get(job.model)
    assert spec is not None  # generate() already refused an unknown model
    price = spec.price_for(job.width, job.height)
    logger.debug("image stored", extra={"key": key, "seconds": time.monotonic() - started})
    return ImageOutcome(
        **base,
        status="SUCCEEDED",
        seed=image.seed,
        output_key=key,
        cost_micro_usd=price.micro_usd_per_image,
        price_source=f"{price.source} (retrieved {price.retrieved.isoformat()})",
    )
