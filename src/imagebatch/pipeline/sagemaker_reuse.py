"""Reuse before a SageMaker chunk is submitted (docs/reuse.md): the chunk's images whose
identity some batch already made (the endpoint's identity: backends/endpoint.py) are copied
into this batch's outputs and recorded reused in a commit of their own; only the rest are sent
to the endpoint.

Under a budget the copies hold first, under a hold of their own (the request that follows
holds for itself), and the commit settles it: a reused image holds and spends only its copy's
cost. When every image of the chunk was reused, nothing is sent and the commit also charges
the attempt's transitions and this Lambda, which no request will carry.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.costs.estimate import chunk_reservation
from imagebatch.costs.sagemaker_seconds import expected_seconds
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.transitions import BATCH_TRANSITIONS
from imagebatch.costs.usage import LambdaClock, Usage, billed_mb_ms, tags_bytes
from imagebatch.errors import ImagesAlreadyRecordedError
from imagebatch.models.records import ChunkFile, ImageJob, ImageOutcome
from imagebatch.models.sagemaker_contract import shape_key
from imagebatch.pipeline.reuse import Reusable, copy_reused, find_reusable, lookup_bound
from imagebatch.pipeline.sagemaker_costing import EndpointCosting

logger = Logger(child=True)

# The copies' hold bounds this Lambda up to their commit when every image is reused.
_COPY_TAIL_S = 2


# Kept whole (63 lines): look up, hold, copy, commit, in the order the budget invariant needs.
def reuse_before_submit(
    chunk: ChunkFile,
    todo: list[ImageJob],
    *,
    attempt: int,
    capped: bool,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    costing: EndpointCosting,
    clock: LambdaClock,
) -> list[ImageOutcome]:
    """The images of `todo` copied and recorded reused (none when the index has none of
    them, the budget cannot hold the copies, or another attempt recorded them first)."""
    identities: dict[str, str] = {}
    for job in todo:
        identity = costing.identity(job) if job.reuse else None
        if identity is not None:
            identities[job.image_id] = identity
    reusable = find_reusable(identities, store=store, ledger=ledger)
    if not reusable:
        return []
    everything = len(reusable) == len(todo)
    hold_id = f"{chunk.chunk_id}-{attempt}-reuse"
    held: int | None = None
    if capped:
        held = ledger.reserve(
            chunk.batch_id, hold_id, _copy_bound(todo, reusable, identities, clock, costing)
        )
        if held is None:
            return []
    saved = _saved(costing, [job for job in todo if job.image_id in reusable])
    reused = copy_reused(
        todo,
        reusable,
        identities,
        chunk,
        store=store,
        saved_micro_usd=lambda job: saved[job.image_id],
        model=costing.model or None,
    )
    usage = store.meter.take() + ledger.meter.take()
    if everything and len(reused) == len(todo):
        usage += Usage(
            sfn_transitions=BATCH_TRANSITIONS.chunk_attempt,
            lambda_requests=1,
            lambda_mb_ms=billed_mb_ms(clock.elapsed_s(), clock.memory_mb),
        )
    settlement = Settlement(
        chunk_id=chunk.chunk_id,
        hold_id=hold_id if held is not None else None,
        reserved_micro_usd=held or 0,
        has_reservation=held is not None,
        usage=usage,
        prices=costing.prices,
    )
    try:
        ledger.commit_images(chunk.batch_id, reused, settlement, tags=chunk.tags, capped=capped)
    except ImagesAlreadyRecordedError:
        # a late result of an earlier attempt recorded some of them meanwhile: send the
        # rest as before (the copies' hold, if any, is written off by finalize as spent)
        logger.info("reused images recorded elsewhere", extra={"chunk_id": chunk.chunk_id})
        return []
    return reused


def _copy_bound(
    todo: list[ImageJob],
    reusable: dict[str, Reusable],
    identities: dict[str, str],
    clock: LambdaClock,
    costing: EndpointCosting,
) -> int:
    """The most the copies' commit charges: a chunk attempt of that many images and no
    inference (each PNG, record and rollup bounded as on the Bedrock path), its Lambda when
    every image is reused, and the lookups."""
    copied = [job for job in todo if job.image_id in reusable]
    amount, _ = chunk_reservation(
        0,
        len(copied),
        memory_mb=clock.memory_mb,
        lambda_seconds_bound=clock.elapsed_s() + _COPY_TAIL_S,
        pixels_bound=max(job.width * job.height for job in copied),
        prices=costing.prices,
        tag_bytes=max(tags_bytes(job.tags) for job in copied),
    )
    return amount + lookup_bound(len(identities), len(copied), costing.prices)


def _saved(costing: EndpointCosting, jobs: list[ImageJob]) -> dict[str, int]:
    """image id -> what the endpoint was expected to charge for it (its measured seconds per
    image of that shape, else the reference figure, at the instance's price)."""
    model = costing.model or jobs[0].model
    keys = {shape_key(job) for job in jobs}
    expected = expected_seconds(
        keys,
        instance_type=costing.price.instance_type,
        model=model,
        measured=costing.throughput.measured(costing.endpoint_name, model, keys),
    )
    per_second = costing.price.micro_usd_per_second
    return {job.image_id: int(expected.per_image[shape_key(job)] * per_second) for job in jobs}
