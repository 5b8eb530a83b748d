"""The step both chunk paths take when the budget cannot hold a chunk: its images recorded as
failed for the budget, nothing spent on them but the attempt's own usage, which comes out of
the overhead reserve (the chunk never held budget to settle it against)."""

from __future__ import annotations

import contextlib

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import ChunkLedgerPort
from imagebatch.costs.settlement import Settlement
from imagebatch.errors import ImagesAlreadyRecordedError
from imagebatch.models.records import ChunkFile, ChunkResult, FailureClass, ImageJob, ImageOutcome

logger = Logger(child=True)

BUDGET_REASON = "max_cost_usd reached: the budget left could not cover this chunk"


def refuse_for_budget(
    batch_id: str,
    chunk: ChunkFile,
    todo: list[ImageJob],
    settlement: Settlement,
    *,
    ledger: ChunkLedgerPort,
    backend: str,
    late_results_possible: bool = False,
    overhead_reserve_left: int | None = None,
) -> ChunkResult:
    """Record `todo` as BUDGET_EXHAUSTED in one commit charged to the overhead reserve.

    `settlement` carries the attempt's usage so far. With `late_results_possible` (the
    SageMaker path, where a result of an earlier attempt may commit some of these images
    between our read and this commit) a refused commit for images already recorded is not
    an error: the images are accounted for either way. `overhead_reserve_left`: the reserve
    as the caller read it just before; a charge past it is counted over cap.
    """
    outcomes = [
        ImageOutcome.failed(
            job,
            chunk_id=chunk.chunk_id,
            backend=backend,
            failure_class=FailureClass.BUDGET_EXHAUSTED,
            reason=BUDGET_REASON,
        )
        for job in todo
    ]
    settlement = settlement.model_copy(
        update={"from_overhead_reserve": True, "overhead_reserve_left": overhead_reserve_left}
    )
    tolerated = (ImagesAlreadyRecordedError,) if late_results_possible else ()
    with contextlib.suppress(*tolerated):
        ledger.commit_images(batch_id, outcomes, settlement, tags=chunk.tags, capped=True)
    logger.warning("chunk refused: budget exhausted", extra={"chunk_id": chunk.chunk_id})
    return ChunkResult(chunk_id=chunk.chunk_id, succeeded=0, failed=len(outcomes), cost_micro_usd=0)
