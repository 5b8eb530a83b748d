"""Images whose PNG is stored but which no commit recorded: recorded from the PNG itself.

An attempt that Lambda stopped at its timeout between storing PNGs and its commit leaves no
record and no pending file, but each PNG carries what its record needs (models.records'
record_evidence: image id, chunk, cost, the hold of the attempt that made it; image_metadata:
seed, model). Bedrock was paid for them, so the chunk's next attempt (before it makes
anything) and finalize (before anything is written off or failed) record them as made,
settling the hold of the attempt that stored them if it is still there: a redrive, or the
retry itself, would otherwise buy them again.

Every attempt looks, whatever its RetryCount (a redriven execution counts from 0 again), so
the look is kept cheap: one ListObjectsV2 over the range of the chunk's own PNG keys, and a
HEAD (for the metadata) only for a PNG found there without a record. Image keys name the
batch and the image, not the chunk, so a chunk whose ids interleave with other chunks' may
need more pages; past the pages a HEAD per image would cost (S3 prices a LIST as 12.5
GETs), the rest of its images are asked for one HEAD each, as before.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.aws.s3_store import image_key
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.settlement import Settlement
from imagebatch.errors import ImagesAlreadyRecordedError
from imagebatch.manifest.schema import SEED_MAX
from imagebatch.models.records import ChunkFile, ImageJob, ImageOutcome

logger = Logger(child=True)

PRICE_SOURCE = "recorded from the stored PNG's metadata (its attempt stopped before its commit)"


def record_stored_images(
    batch_id: str,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    prices: RegionPrices,
    *,
    capped: bool,
    chunk_keys: list[str],
) -> int:
    """Record every Bedrock image of these chunks stored without a record; returns how many.

    Chunk by chunk (a LIST each, a HEAD per PNG found unrecorded): finalize runs it only when
    the summary counts fewer images than the batch has, so a batch without faults pays
    nothing for it."""
    return sum(
        record_stored_chunk(batch_id, store.get_chunk(key), store, ledger, prices, capped=capped)
        for key in chunk_keys
    )


def record_stored_chunk(
    batch_id: str,
    chunk: ChunkFile,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    prices: RegionPrices,
    *,
    capped: bool,
    fenced: bool = False,
) -> int:
    """Record one chunk's stored, unrecorded Bedrock images; returns how many were recorded.
    `fenced`: a chunk attempt records them (refused once finalize has started).

    One commit per attempt that stored them (their `hold-id`), settling that attempt's hold
    when it is still held: the hold covered these images, so settling it charges them once
    and gives the rest back, where a write-off would charge the whole hold on top."""
    if chunk.backend != "bedrock" or not chunk.images:
        return 0
    stored = _maybe_stored(chunk, store, prices)
    if not stored:
        return 0
    done = ledger.recorded_image_ids(batch_id, [job.image_id for job in stored])
    by_hold: dict[str, list[ImageOutcome]] = {}
    for job in stored:
        if job.image_id in done:
            continue
        found = _from_png(store, chunk, job)
        if found is not None:
            outcome, hold_id = found
            by_hold.setdefault(hold_id, []).append(outcome)
    recorded = 0
    for hold_id, outcomes in by_hold.items():
        hold = ledger.hold_amount(batch_id, hold_id)
        settlement = Settlement(
            chunk_id=chunk.chunk_id,
            reserved_micro_usd=hold or 0,
            has_reservation=hold is not None,
            hold_id=hold_id,
            prices=prices,
            fenced=fenced,
        )
        try:
            ledger.commit_images(batch_id, outcomes, settlement, tags=chunk.tags, capped=capped)
        except ImagesAlreadyRecordedError:
            continue  # a late commit of that attempt (or another reader) recorded them
        logger.warning(
            "images recorded from their stored PNGs",
            extra={"chunk_id": chunk.chunk_id, "hold": hold_id, "images": len(outcomes)},
        )
        recorded += len(outcomes)
    return recorded


def _maybe_stored(chunk: ChunkFile, store: ChunkStorePort, prices: RegionPrices) -> list[ImageJob]:
    """The chunk's images whose PNG the listing found, or that lie past where it stopped."""
    keys = {
        job.image_id: image_key(chunk.output_prefix, chunk.batch_id, job.image_id)
        for job in chunk.images
    }
    # no more LIST pages than the HEADs they save cost
    per_list = prices.service("s3_put_request").usd / prices.service("s3_get_request").usd
    pages = max(1, int(len(keys) / per_list))
    found, reached = store.list_keys_between(
        min(keys.values()), max(keys.values()), max_pages=pages
    )
    return [
        job for job in chunk.images if keys[job.image_id] in found or keys[job.image_id] > reached
    ]


def _reused_from(meta: dict[str, str], cost: int) -> dict[str, Any]:
    """A copy's source (pipeline.reuse): recorded as reused, what it saved, never as made.
    Only a copy that cost nothing is one (a forged source must not hide a charge)."""
    batch, image = meta.get("reused-from-batch"), meta.get("reused-from-image")
    saved = meta.get("reuse-saved-micro-usd", "")
    if cost or not batch or not image or not (saved.isascii() and saved.isdigit()):
        return {}
    return {
        "reused_from_batch_id": batch,
        "reused_from_image_id": image,
        "reuse_saved_micro_usd": int(saved),
    }


def _from_png(
    store: ChunkStorePort, chunk: ChunkFile, job: ImageJob
) -> tuple[ImageOutcome, str] | None:
    key = image_key(chunk.output_prefix, chunk.batch_id, job.image_id)
    meta = store.image_metadata(key)
    if not meta or meta.get("image-id") != job.image_id:
        return None
    # Anyone who may write outputs/ may write this metadata: only a whole, non-negative cost
    # is evidence (a negative one would credit the batch and raise its budget left).
    cost = meta.get("cost-micro-usd", "")
    if not (cost.isascii() and cost.isdigit()):
        return None
    # likewise a seed: one no manifest may give (47 digits fit no DynamoDB number) is none
    seed = meta.get("seed", "")
    if not (seed.isascii() and seed.isdigit() and int(seed) <= SEED_MAX):
        return None
    # Only a hold of this chunk may be settled by its PNGs (a forged name must not settle
    # another chunk's live hold); a PNG from before holds were per attempt names none.
    hold_id = meta.get("hold-id", chunk.chunk_id)
    if hold_id != chunk.chunk_id and not hold_id.startswith(f"{chunk.chunk_id}@"):
        hold_id = chunk.chunk_id
    outcome = ImageOutcome(
        **_reused_from(meta, int(cost)),
        image_id=job.image_id,
        item_id=job.item_id,
        chunk_id=chunk.chunk_id,
        status="SUCCEEDED",
        model=job.model,
        backend=chunk.backend,
        seed=int(seed),
        prompt_sha256=job.prompt_sha256,
        cost_micro_usd=int(cost),
        price_source=PRICE_SOURCE,
        output_key=key,
    )
    return outcome, hold_id
