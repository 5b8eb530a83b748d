"""What a ledger commit charges: the settlement of a chunk's budget hold and the summary and
day-rollup deltas of a commit. Pure arithmetic over outcomes; aws.ledger writes the result."""

from __future__ import annotations

from collections.abc import Sequence

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from imagebatch.costs.overhead import EndpointRequest
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.usage import Usage
from imagebatch.models.records import ImageOutcome

logger = Logger(child=True)


class Settlement(BaseModel):
    """What a commit charges: the chunk's reservation (if any) and the counted operations."""

    model_config = ConfigDict(frozen=True)
    chunk_id: str
    reserved_micro_usd: int = 0
    has_reservation: bool = False
    # Operations the invocation counted; the commit adds its own writes and charges the
    # orchestration + storage of all of them (rounded up) at these prices.
    usage: Usage = Usage()
    prices: RegionPrices | None = None
    # A chunk refused for budget pays its bookkeeping from the batch's overhead reserve.
    from_overhead_reserve: bool = False
    # The hold this commit settles, when it is not the chunk's own (a SageMaker request holds
    # per attempt: a late result of an earlier attempt settles that attempt's hold).
    hold_id: str | None = None
    # Self-hosted instance time no image record of this commit carries (a failed or stopped
    # call, images another attempt recorded); charged as inference all the same.
    rework_micro_usd: int = 0
    # Makes the commit once-only when its images alone cannot (a result that may carry no new
    # image): a marker item written in the same transaction, conditional on not existing.
    request_key: str | None = None
    # Counted in the summary's chunk_commits (the contact sheet's commit is not a chunk's).
    chunk_commit: bool = True
    # A self-hosted request's record under its endpoint (when it ran, its seconds and what
    # this commit charged for them), written in the same transaction: the endpoint observer
    # attributes the instance time around it (costs.overhead).
    endpoint: str | None = None
    endpoint_request: EndpointRequest | None = None

    @property
    def hold_key(self) -> str:
        return self.hold_id or self.chunk_id


def summary_adds(
    outcomes: Sequence[ImageOutcome],
    settlement: Settlement,
    usage: Usage,
    overhead: int,
    *,
    capped: bool,
) -> dict[str, int]:
    inference = sum(o.cost_micro_usd for o in outcomes)
    charge = inference + settlement.rework_micro_usd + overhead
    if settlement.has_reservation and charge > settlement.reserved_micro_usd:
        logger.error(
            "charge exceeds reservation",
            extra={"charge": charge, "reserved": settlement.reserved_micro_usd},
        )
    succeeded = sum(1 for o in outcomes if o.status == "SUCCEEDED")
    adds = {
        "images_succeeded": succeeded,
        "images_failed": len(outcomes) - succeeded,
        "cost_micro_usd": inference,
        "spent_micro_usd": charge,
        "chunk_commits": 1 if settlement.chunk_commit else 0,
        **usage.ledger_fields(),
    }
    if settlement.rework_micro_usd:
        adds["rework_micro_usd"] = settlement.rework_micro_usd
    if settlement.has_reservation:
        adds["reserved_micro_usd"] = -settlement.reserved_micro_usd
        adds["budget_left_micro_usd"] = settlement.reserved_micro_usd - charge
    elif capped and settlement.from_overhead_reserve:
        adds["overhead_reserve_micro_usd"] = -charge
    elif capped:
        adds["budget_left_micro_usd"] = -charge
    return adds


def rollup_adds(outcomes: Sequence[ImageOutcome], overhead: int, rework: int = 0) -> dict[str, int]:
    """The day rollup's counters for a commit. Per-model totals are top-level attributes
    (`model_spent#<model>`) because DynamoDB's ADD works only on top-level attributes;
    overhead and rework are split by image count, the remainder to the first model."""
    models = sorted({o.model for o in outcomes})
    counts = {m: sum(1 for o in outcomes if o.model == m) for m in models}
    shared = overhead + rework
    shares = {m: shared * counts[m] // len(outcomes) for m in models}
    shares[models[0]] += shared - sum(shares.values())
    inference = sum(o.cost_micro_usd for o in outcomes) + rework
    adds = {
        "images": sum(1 for o in outcomes if o.status == "SUCCEEDED"),
        "inference_micro_usd": inference,
        "spent_micro_usd": inference + overhead,
    }
    for model in models:
        mine = [o for o in outcomes if o.model == model]
        model_inference = sum(o.cost_micro_usd for o in mine)
        adds[f"model_images#{model}"] = sum(1 for o in mine if o.status == "SUCCEEDED")
        adds[f"model_spent#{model}"] = model_inference + shares[model]
    return adds
