"""A chunk attempt's one commit, and what becomes of its made images when it cannot land.

Split from pipeline.generate (which makes the images): the commit beside another attempt of
the chunk that recorded some first (what this one bought again is rework), the fence once
finalize started, and the pending file when the ledger stays out.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.costs.settlement import Settlement
from imagebatch.errors import (
    BatchFinalizingError,
    ChunkUnfinished,
    ImagesAlreadyRecordedError,
    StorageError,
)
from imagebatch.models.records import ChunkFile, FailureClass, ImageOutcome
from imagebatch.pipeline.pending import save_pending

logger = Logger(child=True)


def commit_or_keep(
    batch_id: str,
    chunk: ChunkFile,
    outcomes: list[ImageOutcome],
    unfinished: dict[str, FailureClass],
    settlement: Settlement,
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
    capped: bool,
) -> list[ImageOutcome]:
    """One ledger transaction for the attempt; returns the outcomes it recorded. If the
    ledger stays unavailable, the made images are kept for the retry (pipeline.pending) and
    the chunk goes back unfinished: paid-for images must not be bought again."""
    try:
        return _commit_beside_others(
            batch_id, chunk, outcomes, settlement, ledger=ledger, capped=capped
        )
    except BatchFinalizingError:
        # Finalize started meanwhile and refuses chunk commits; it commits a pending file
        # before it records a chunk's images as lost, so the made images go there.
        _keep(store, batch_id, chunk, outcomes, settlement, capped=capped)
        raise
    except ImagesAlreadyRecordedError as exc:
        # This attempt's hold was settled by another reader of its PNGs (a later attempt)
        # or written off: what it holds no longer covers these images. They are stored with
        # their evidence; the next attempt records whichever are still unrecorded.
        raise ChunkUnfinished(
            {**unfinished, **{o.image_id: FailureClass.STORAGE_ERROR for o in outcomes}}
        ) from exc
    except StorageError:
        # S3 out too: the chunk is still retried (ChunkUnfinished), never failed for good
        # while the images it paid for are in outputs/ unrecorded.
        _keep(store, batch_id, chunk, outcomes, settlement, capped=capped)
        raise ChunkUnfinished(
            {**unfinished, **{o.image_id: FailureClass.STORAGE_ERROR for o in outcomes}}
        ) from None


def _keep(
    store: ChunkStorePort,
    batch_id: str,
    chunk: ChunkFile,
    outcomes: list[ImageOutcome],
    settlement: Settlement,
    *,
    capped: bool,
) -> None:
    """The made images as the chunk's pending file, for whoever commits next."""
    try:
        save_pending(
            store,
            batch_id,
            outcomes,
            settlement,
            capped=capped,
            tags=chunk.tags,
            rollup_model=chunk.images[0].model if chunk.images else None,
        )
    except StorageError as exc:
        logger.error(
            "pending commit not written",
            extra={"chunk_id": chunk.chunk_id, "images": len(outcomes), "error": str(exc)},
        )


def _commit_beside_others(
    batch_id: str,
    chunk: ChunkFile,
    outcomes: list[ImageOutcome],
    settlement: Settlement,
    *,
    ledger: ChunkLedgerPort,
    capped: bool,
) -> list[ImageOutcome]:
    """Commit the outcomes; where another attempt of the chunk beside this one recorded some
    first, commit the rest and settle this attempt's own hold, what it paid for those again
    charged as rework (each purchase charged once, each image recorded once). Raises
    ImagesAlreadyRecordedError when this attempt's hold is no longer there to settle."""
    # a commit left with rework alone (images another attempt recorded, unconfirmed calls):
    # charged to the chunk's model
    rollup_model = chunk.images[0].model if settlement.rework_micro_usd and chunk.images else None
    for _ in range(3):
        try:
            ledger.commit_images(
                batch_id,
                outcomes,
                settlement,
                tags=chunk.tags,
                capped=capped,
                rollup_model=rollup_model,
            )
            return outcomes
        except ImagesAlreadyRecordedError as exc:
            if exc.settled_elsewhere:
                raise
            recorded = ledger.recorded_image_ids(batch_id, [o.image_id for o in outcomes])
            again = sum(o.cost_micro_usd for o in outcomes if o.image_id in recorded)
            logger.warning(
                "images recorded by another attempt of the chunk",
                extra={"chunk_id": chunk.chunk_id, "images": len(recorded), "rework": again},
            )
            outcomes = [o for o in outcomes if o.image_id not in recorded]
            rollup_model = chunk.images[0].model
            settlement = settlement.model_copy(
                update={"rework_micro_usd": settlement.rework_micro_usd + again}
            )
    raise ImagesAlreadyRecordedError(f"chunk {chunk.chunk_id}: commits kept colliding")
