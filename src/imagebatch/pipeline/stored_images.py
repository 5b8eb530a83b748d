"""Images whose PNG is stored but which no commit recorded: recorded from the PNG itself.

An attempt that Lambda stopped at its timeout between storing PNGs and its commit leaves no
record and no pending file, but each PNG carries what its record needs (models.records'
record_evidence: image id, chunk, cost; image_metadata: seed, model). Bedrock was paid for
them, so finalize records them as made, settling the chunk's hold if one is left, before
anything is written off or failed (a redrive would buy them again).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, image_key
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.settlement import Settlement
from imagebatch.errors import ImagesAlreadyRecordedError
from imagebatch.models.records import ChunkFile, ImageJob, ImageOutcome

logger = Logger(child=True)

PRICE_SOURCE = "recorded from the stored PNG's metadata (its attempt stopped before its commit)"


def record_stored_images(
    batch_id: str, store: BatchStore, ledger: Ledger, prices: RegionPrices, *, capped: bool
) -> int:
    """Record every Bedrock image stored under outputs/ without a record; returns how many.

    Chunk by chunk, one HEAD per unrecorded image: it runs only when the summary counts
    fewer images than the batch has, so a batch without faults pays nothing for it."""
    recorded = 0
    for ref in store.get_chunk_index(batch_id):
        chunk = store.get_chunk(ref.key)
        if chunk.backend != "bedrock":
            continue
        done = ledger.recorded_image_ids(batch_id, [job.image_id for job in chunk.images])
        found = [
            outcome
            for job in chunk.images
            if job.image_id not in done
            for outcome in [_from_png(store, chunk, job)]
            if outcome is not None
        ]
        if not found:
            continue
        hold = ledger.hold_amount(batch_id, chunk.chunk_id)
        settlement = Settlement(
            chunk_id=chunk.chunk_id,
            reserved_micro_usd=hold or 0,
            has_reservation=hold is not None,
            prices=prices,
        )
        try:
            ledger.commit_images(batch_id, found, settlement, tags=chunk.tags, capped=capped)
        except ImagesAlreadyRecordedError:
            continue  # a late commit of the chunk recorded them meanwhile
        logger.warning(
            "images recorded from their stored PNGs",
            extra={"chunk_id": chunk.chunk_id, "images": len(found)},
        )
        recorded += len(found)
    return recorded


def _from_png(store: BatchStore, chunk: ChunkFile, job: ImageJob) -> ImageOutcome | None:
    key = image_key(chunk.output_prefix, chunk.batch_id, job.image_id)
    meta = store.image_metadata(key)
    if not meta or meta.get("image-id") != job.image_id:
        return None
    # Anyone who may write outputs/ may write this metadata: only a whole, non-negative cost
    # is evidence (a negative one would credit the batch and raise its budget left).
    cost = meta.get("cost-micro-usd", "")
    if not (cost.isascii() and cost.isdigit()):
        return None
    return ImageOutcome(
        image_id=job.image_id,
        item_id=job.item_id,
        chunk_id=chunk.chunk_id,
        status="SUCCEEDED",
        model=job.model,
        backend=chunk.backend,
        seed=int(meta.get("seed", job.seed or 0)),
        prompt_sha256=job.prompt_sha256,
        cost_micro_usd=int(cost),
        price_source=PRICE_SOURCE,
        output_key=key,
    )
