"""One chunk: make its images, store them, commit their costs once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.aws.s3_store import image_key
from imagebatch.backends.bedrock import bedrock_identity
from imagebatch.backends.retry import (
    AccessWait,
    AdaptiveConcurrency,
    BackoffPolicy,
    ImageBackend,
    RetryingBackend,
)
from imagebatch.costs.estimate import chunk_reservation
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms, tags_bytes
from imagebatch.errors import (
    BatchFinalizingError,
    ChunkUnfinished,
    ImageGenerationError,
    StorageError,
    UnconfirmedCall,
    UnknownModelError,
)
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.records import (
    ChunkFile,
    ChunkResult,
    ChunkTask,
    FailureClass,
    ImageJob,
    ImageOutcome,
    image_metadata,
    record_evidence,
)
from imagebatch.pipeline.budget_refusal import refuse_for_budget
from imagebatch.pipeline.chunk_commit import commit_or_keep
from imagebatch.pipeline.pending import commit_pending
from imagebatch.pipeline.reuse import (
    bedrock_identities,
    copy_reused,
    find_reusable,
    lookup_bound,
    reusable_from_made,
    same_identity_followers,
)
from imagebatch.pipeline.stored_images import record_stored_chunk

logger = Logger(child=True)


class _Unfinished:
    def __init__(self, failure_class: FailureClass, unconfirmed_micro_usd: int | None = None):
        self.failure_class = failure_class
        # a call sent whose reply never came whole (maybe billed): its price, as rework
        self.unconfirmed_micro_usd = unconfirmed_micro_usd


# generate_chunk stays whole (about 130 lines): each step is a helper; what is left is their
# order (pending, fence, stored PNGs, read, look up, hold, copy, make, copy duplicates, commit),
# which the budget invariant depends on and which reads best in one place.
def generate_chunk(
    task: ChunkTask,
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    backend: ImageBackend,
    catalogue: ModelCatalogue,
    concurrency: int,
    time_left_ms: Callable[[], int],
    commit_reserve_ms: int,
    prices: RegionPrices,
    clock: LambdaClock,
    retry_policy: BackoffPolicy | None = None,
    reuse: bool = True,
    access_wait: AccessWait | None = None,
    attempt_id: str | None = None,
) -> ChunkResult:
    """Make the chunk's images not yet in the ledger and commit them in one transaction.

    Under a budget the attempt first holds the most it can charge (images, its Lambda run to
    the timeout, PNG bytes) and does not run when the hold fails; images still unmade when
    time runs out, or throttled past their attempts, go back as ChunkUnfinished. With
    `reuse` (the stack's ReuseImages), an image some batch already made is copied, not made
    (pipeline.reuse): looked up before the hold, copied after it. The hold is this
    attempt's own (`<chunk>@<attempt_id>`, the Lambda request id): a second attempt of the
    chunk running beside it neither settles nor writes it off.
    """
    chunk = store.get_chunk(task.chunk.key)
    commit_pending(store, ledger, task.batch_id, chunk.chunk_id, prices, fenced=True)
    summary = ledger.get_batch(task.batch_id)
    capped = summary is not None and summary.capped
    if summary is not None and summary.finalizing_at is not None:
        # a ghost attempt (Step Functions gave up on it): finalize accounts from here
        raise BatchFinalizingError(f"batch {task.batch_id} is being finalized")
    # Whatever its RetryCount (a redriven execution counts from 0 again): an earlier attempt
    # killed between its PNGs and its commit left paid-for images with no record, recorded
    # from their PNGs, not bought again (one LIST when none are stored).
    try:
        record_stored_chunk(task.batch_id, chunk, store, ledger, prices, capped=capped, fenced=True)
    except StorageError as exc:
        # nothing bought or held yet: the chunk is simply run again
        raise ChunkUnfinished(
            {job.image_id: FailureClass.STORAGE_ERROR for job in chunk.images}
        ) from exc
    done = ledger.recorded_image_ids(task.batch_id, [job.image_id for job in chunk.images])
    todo = [job for job in chunk.images if job.image_id not in done]
    if not todo:
        return ChunkResult.already_done(chunk.chunk_id, len(done))
    identities = bedrock_identities(todo, catalogue) if reuse else {}
    reusable = find_reusable(identities, store=store, ledger=ledger)
    # two images of one identity in the chunk: the second is a copy of the first, made here
    followers = same_identity_followers(
        [job for job in todo if job.image_id not in reusable], identities
    )
    to_make = [
        job for job in todo if job.image_id not in reusable and job.image_id not in followers
    ]
    settlement = Settlement(chunk_id=chunk.chunk_id, prices=prices, fenced=True)
    hold_id: str | None = None
    if capped:
        bound = _attempt_bound(
            todo,
            to_make=to_make,
            catalogue=catalogue,
            clock=clock,
            seconds_left=time_left_ms() / 1000,
            prices=prices,
        )
        bound += lookup_bound(len(identities), len(todo), prices)
        hold_id = f"{chunk.chunk_id}@{attempt_id or uuid.uuid4().hex}"
        held = ledger.reserve(task.batch_id, hold_id, bound)
        if held is None:
            return _refuse(
                task, chunk, todo, store=store, ledger=ledger, clock=clock, settlement=settlement
            )
        settlement = settlement.model_copy(
            update={"reserved_micro_usd": held, "has_reservation": True, "hold_id": hold_id}
        )
    # The batch's quota-derived share (ingest) caps the function's configured concurrency.
    ceiling = max(1, min(concurrency, task.chunk_concurrency or concurrency))
    limiter = AdaptiveConcurrency(initial=ceiling, maximum=ceiling)
    retrying = RetryingBackend(
        backend,
        limiter,
        retry_policy or BackoffPolicy(),
        time_left_ms=time_left_ms,
        reserve_ms=commit_reserve_ms,
        access_wait=access_wait or AccessWait(),
    )

    def saved(job: ImageJob) -> int:
        return _price(catalogue, job)

    reused = copy_reused(
        todo, reusable, identities, chunk, store=store, saved_micro_usd=saved, hold_id=hold_id
    )
    results = _make_images(
        to_make,
        lambda job: _make_image(job, chunk, store, retrying, catalogue, hold_id=hold_id),
        threads=ceiling,
        out_of_time=lambda: time_left_ms() < commit_reserve_ms,
    )
    made = [r for r in results if isinstance(r, ImageOutcome)]
    followed = reusable_from_made(followers, made, task.batch_id, store=store)
    reused += copy_reused(
        todo, followed, identities, chunk, store=store, saved_micro_usd=saved, hold_id=hold_id
    )
    copied = {o.image_id for o in reused}
    outcomes = reused + made
    unfinished = {
        job.image_id: r.failure_class
        for job, r in zip(to_make, results, strict=True)
        if isinstance(r, _Unfinished)
    } | {
        image_id: FailureClass.STORAGE_ERROR
        for image_id in (reusable.keys() | followers.keys()) - copied
    }
    # Calls maybe billed with no image returned: charged as rework, at most one per image of
    # this attempt (never called again here), so within what its hold counted for them.
    unconfirmed = [
        r.unconfirmed_micro_usd
        for r in results
        if isinstance(r, _Unfinished) and r.unconfirmed_micro_usd is not None
    ]
    settlement = settlement.model_copy(
        update={
            "usage": _invocation_usage(store, ledger, clock),
            "rework_micro_usd": sum(unconfirmed),
            "unconfirmed_calls": len(unconfirmed),
        }
    )
    committed = commit_or_keep(
        task.batch_id,
        chunk,
        outcomes,
        unfinished,
        settlement,
        store=store,
        ledger=ledger,
        capped=capped,
    )
    logger.info(
        "chunk committed",
        extra={
            "chunk_id": chunk.chunk_id,
            "committed": len(committed),
            "reused": len(reused),
            "already_done": len(done),
            "unfinished": len(unfinished),
            "throttles": limiter.throttles,
            "concurrency_lowest": limiter.lowest,
        },
    )
    if unfinished:
        raise ChunkUnfinished(unfinished)
    skipped = len(done) + len(outcomes) - len(committed)
    return ChunkResult.of(chunk.chunk_id, committed, skipped=skipped, throttles=limiter.throttles)


def _make_images(
    todo: list[ImageJob],
    make: Callable[[ImageJob], ImageOutcome | _Unfinished],
    *,
    threads: int,
    out_of_time: Callable[[], bool],
) -> list[ImageOutcome | _Unfinished]:
    """One thread per slot of the concurrency ceiling (the limiter inside `make` decides how
    many call at once); an image not started before the commit reserve is unfinished."""

    def attempt(job: ImageJob) -> ImageOutcome | _Unfinished:
        if out_of_time():
            return _Unfinished(FailureClass.TIMEOUT)
        return make(job)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
        return list(pool.map(attempt, todo))


def _attempt_bound(
    todo: list[ImageJob],
    *,
    to_make: list[ImageJob],
    catalogue: ModelCatalogue,
    clock: LambdaClock,
    seconds_left: float,
    prices: RegionPrices,
) -> int:
    """The most this attempt can charge: every image stored (made or copied), the inference
    of those to make, the Lambda run to its timeout."""
    amount, _ = chunk_reservation(
        sum(_price(catalogue, job) for job in to_make),
        len(todo),
        memory_mb=clock.memory_mb,
        lambda_seconds_bound=clock.elapsed_s() + seconds_left,
        pixels_bound=max(job.width * job.height for job in todo),
        prices=prices,
        # a job's tags hold the batch's, which the summary and rollups carry
        tag_bytes=max(tags_bytes(job.tags) for job in todo),
    )
    return amount


def _price(catalogue: ModelCatalogue, job: ImageJob) -> int:
    spec = catalogue.get(job.model)
    return spec.price_for(job.width, job.height).micro_usd_per_image if spec else 0


def _invocation_usage(store: ChunkStorePort, ledger: ChunkLedgerPort, clock: LambdaClock) -> Usage:
    """What this invocation did so far, its own Lambda request and billed duration included."""
    return (
        store.meter.take()
        + ledger.meter.take()
        + Usage(
            sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
            lambda_requests=1,
            lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb),
        )
    )


def _refuse(
    task: ChunkTask,
    chunk: ChunkFile,
    todo: list[ImageJob],
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    clock: LambdaClock,
    settlement: Settlement,
) -> ChunkResult:
    """The budget cannot cover the chunk: the refusal both paths share, charged with what this
    invocation used so far."""
    # the overhead reserve as it is now (other refusals spend it too), read before the usage
    # is taken so the commit charges the read
    summary = ledger.get_batch(task.batch_id)
    usage = _invocation_usage(store, ledger, clock)
    return refuse_for_budget(
        task.batch_id,
        chunk,
        todo,
        settlement.model_copy(update={"usage": usage}),
        ledger=ledger,
        backend=chunk.backend,
        overhead_reserve_left=summary.overhead_reserve_micro_usd if summary else None,
    )


def _make_image(
    job: ImageJob,
    chunk: ChunkFile,
    store: ChunkStorePort,
    backend: ImageBackend,
    catalogue: ModelCatalogue,
    *,
    hold_id: str | None,
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
    except UnconfirmedCall as exc:
        logger.warning(
            "Bedrock call unconfirmed: charged as rework",
            extra={"image_id": job.image_id, "kind": "unconfirmed_call", "reason": exc.reason},
        )
        return _Unfinished(exc.failure_class, unconfirmed_micro_usd=_price(catalogue, job))
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
    spec = catalogue.get(job.model)
    if spec is None:
        # generate() refuses an unknown model before it is called; this is a data error.
        raise UnknownModelError(f"model {job.model!r} is not in the catalogue")
    price = spec.price_for(job.width, job.height)
    charge = {
        "identity_sha256": bedrock_identity(job, spec),
        "seed": image.seed,
        "cost_micro_usd": price.micro_usd_per_image,
        "price_source": f"{price.source} (retrieved {price.retrieved.isoformat()})",
    }
    key = image_key(chunk.output_prefix, batch_id, job.image_id)
    try:
        evidence = record_evidence(job.image_id, chunk_id, price.micro_usd_per_image, hold_id)
        store.put_image(key, image.png, {**image_metadata(batch_id, job, image.seed), **evidence})
    except StorageError as exc:
        # Bedrock made (and billed) the image; only storing it failed.
        logger.warning("PNG not stored", extra={"image_id": job.image_id, "reason": exc.reason})
        return ImageOutcome(
            **base,
            **charge,
            status="FAILED",
            failure_class=FailureClass.STORAGE_ERROR,
            failure_reason=exc.reason[:1000],
        )
    logger.debug("image stored", extra={"key": key, "seconds": time.monotonic() - started})
    return ImageOutcome(**base, **charge, status="SUCCEEDED", output_key=key)
