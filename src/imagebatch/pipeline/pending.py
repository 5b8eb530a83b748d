"""Images an attempt made but could not record: kept in S3 for the next attempt (or finalize).

Bedrock has been paid for these images and their PNGs are stored; only the ledger commit
failed (a DynamoDB outage that outlasted the commit's own retries). Making them again would
buy them twice, so the next attempt of the chunk commits them first, with the same
settlement the failed commit carried (it settles that attempt's budget hold), and finalize
does the same for a chunk whose retries ran out.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field, ValidationError

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.usage import Usage
from imagebatch.errors import ImagesAlreadyRecordedError
from imagebatch.models.records import ImageOutcome

logger = Logger(child=True)


# Where every image the pipeline stores lies (output_prefix is under it, manifest.schema).
_OUTPUTS = "outputs/"


class PendingCommit(BaseModel):
    """chunks/<batch>/<chunk>.pending.json. Read back from S3, where anyone allowed
    s3:PutObject on the bucket can write it: its money and counts are never negative
    (ImageOutcome, Usage) and commit_pending checks its ids and keys before acting on it."""

    outcomes: list[ImageOutcome]
    reserved_micro_usd: int = Field(default=0, ge=0)
    has_reservation: bool = False
    usage: Usage = Usage()
    capped: bool = False
    tags: dict[str, str] = {}
    # the hold the failed commit settles (its attempt's own: holds are per attempt)
    hold_id: str | None = None
    # what the attempt paid for without an image to record (unconfirmed calls): rework
    rework_micro_usd: int = Field(default=0, ge=0)
    unconfirmed_calls: int = Field(default=0, ge=0)
    # the chunk's model, charged the rework when no image is left to carry it
    rollup_model: str | None = None


def save_pending(
    store: ChunkStorePort,
    batch_id: str,
    outcomes: list[ImageOutcome],
    settlement: Settlement,
    *,
    capped: bool,
    tags: Mapping[str, str],
    rollup_model: str | None = None,
) -> None:
    pending = PendingCommit(
        outcomes=outcomes,
        reserved_micro_usd=settlement.reserved_micro_usd,
        has_reservation=settlement.has_reservation,
        usage=settlement.usage,
        capped=capped,
        tags=dict(tags),
        hold_id=settlement.hold_id,
        rework_micro_usd=settlement.rework_micro_usd,
        unconfirmed_calls=settlement.unconfirmed_calls,
        rollup_model=rollup_model,
    )
    store.put_pending_commit(batch_id, settlement.chunk_id, pending.model_dump_json().encode())
    logger.warning(
        "ledger commit failed; made images kept for the retry",
        extra={"chunk_id": settlement.chunk_id, "images": len(outcomes)},
    )


def commit_pending(
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    batch_id: str,
    chunk_id: str,
    prices: RegionPrices,
    *,
    fenced: bool = False,
) -> int:
    """Commit what an earlier attempt of this chunk made; returns the images it recorded.
    `fenced`: a chunk attempt's (refused once finalize has started), not finalize's own."""
    body = store.get_pending_commit(batch_id, chunk_id)
    if body is None:
        return 0
    pending = _read_pending(body, batch_id, chunk_id)
    if pending is None:
        return 0
    settlement = Settlement(
        chunk_id=chunk_id,
        reserved_micro_usd=pending.reserved_micro_usd,
        has_reservation=pending.has_reservation,
        usage=pending.usage,
        hold_id=pending.hold_id,
        rework_micro_usd=pending.rework_micro_usd,
        unconfirmed_calls=pending.unconfirmed_calls,
        prices=prices,
        fenced=fenced,
    )
    try:
        ledger.commit_images(
            batch_id,
            pending.outcomes,
            settlement,
            tags=pending.tags,
            capped=pending.capped,
            rollup_model=pending.rollup_model if pending.rework_micro_usd else None,
        )
        recorded = len(pending.outcomes)
    except ImagesAlreadyRecordedError:
        recorded = 0  # an earlier reader of the same file committed it
    store.delete_pending_commit(batch_id, chunk_id)
    logger.info("pending commit recorded", extra={"chunk_id": chunk_id, "images": recorded})
    return recorded


def _read_pending(body: bytes, batch_id: str, chunk_id: str) -> PendingCommit | None:
    """The pending file if the pipeline could have written it, else None (logged as an
    error, the file left as evidence): a refused file commits nothing, and the chunk's images
    are made again or recorded by finalize as any unrecorded image is."""
    reason: str | None
    try:
        pending = PendingCommit.model_validate_json(body)
    except ValidationError as exc:
        reason = f"not a pending commit: {exc.error_count()} invalid field(s), e.g. " + str(
            exc.errors()[0]["loc"]
        )
    else:
        reason = _foreign(pending, batch_id, chunk_id)
        if reason is None:
            return pending
    logger.error(
        "pending file refused: the pipeline did not write it",
        extra={"batch_id": batch_id, "chunk_id": chunk_id, "reason": reason},
    )
    return None


def _foreign(pending: PendingCommit, batch_id: str, chunk_id: str) -> str | None:
    """Why the outcomes are not this chunk's own (None: they are)."""
    for outcome in pending.outcomes:
        if outcome.chunk_id != chunk_id:
            return f"image {outcome.image_id!r} names chunk {outcome.chunk_id!r}"
        key = outcome.output_key
        if key is not None and (not key.startswith(_OUTPUTS) or ".." in key.split("/")):
            return f"image {outcome.image_id!r} has output key {key!r}, not under {_OUTPUTS}"
        if key is not None and f"/{batch_id}/" not in key:
            return f"image {outcome.image_id!r} has output key {key!r} of another batch"
    return None
