"""What a ledger commit charges: the settlement of a chunk's budget hold and the summary and
day-rollup deltas of a commit. Pure arithmetic over outcomes (the budget's part in
costs.budget); aws.ledger writes the result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from imagebatch.costs import budget
from imagebatch.costs.budget import SPENT
from imagebatch.costs.overhead import EndpointRequest
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.usage import Usage, price_usage
from imagebatch.models.money import ceil_micro
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
    # What the overhead reserve held when the commit's writer last read it (None: unknown):
    # a charge past it is counted over cap (costs.budget.over_reserve).
    overhead_reserve_left: int | None = None
    # The hold this commit settles, when it is not the chunk's own (a SageMaker request holds
    # per attempt: a late result of an earlier attempt settles that attempt's hold).
    hold_id: str | None = None
    # Self-hosted instance time no image record of this commit carries (a failed or stopped
    # call, images another attempt recorded); charged as inference all the same.
    rework_micro_usd: int = 0
    # Bedrock calls sent whose reply never came whole (maybe billed): their price is part
    # of rework_micro_usd, their count labels it on the summary
    unconfirmed_calls: int = 0
    # Makes the commit once-only when its images alone cannot (a result that may carry no new
    # image): a marker item written in the same transaction, conditional on not existing.
    request_key: str | None = None
    # Counted in the summary's chunk_commits (the contact sheet's commit is not a chunk's).
    chunk_commit: bool = True
    # A chunk attempt's commit: refused once finalize has started (the summary's
    # finalizing_at), so a ghost attempt's late commit cannot change what finalize counts.
    fenced: bool = False
    # A self-hosted request's record under its endpoint (when it ran, its seconds and what
    # this commit charged for them), written in the same transaction: the endpoint observer
    # attributes the instance time around it (costs.overhead).
    endpoint: str | None = None
    endpoint_request: EndpointRequest | None = None

    @property
    def hold_key(self) -> str:
        return self.hold_id or self.chunk_id


@dataclass(frozen=True)
class CommitCharge:
    """What one commit ADDs: to the batch summary, and to the day's cost rollup (None: the
    commit leaves the rollup alone)."""

    summary_adds: dict[str, int]
    rollup: dict[str, int] | None

    @property
    def micro_usd(self) -> int:
        return self.summary_adds[SPENT]


def price_commit(
    outcomes: Sequence[ImageOutcome],
    settlement: Settlement,
    own_write_units: int,
    *,
    capped: bool,
    rollup_model: str | None = None,
) -> CommitCharge:
    """The commit's charge: its images' inference, the settlement's rework, and the
    orchestration + storage of the counted operations and the commit's own writes
    (`own_write_units`), priced once and rounded up."""
    usage = settlement.usage + Usage(ddb_write_units=own_write_units)
    overhead = ceil_micro(price_usage(usage, settlement.prices).total) if settlement.prices else 0
    adds = summary_adds(outcomes, settlement, usage, overhead, capped=capped)
    rework = settlement.rework_micro_usd
    rollup: dict[str, int] | None = None
    if outcomes:
        rollup = rollup_adds(outcomes, overhead, rework)
    elif rollup_model is not None and overhead + rework > 0:
        # a commit without images (a contact sheet, a request whose images another attempt
        # recorded) is charged to the model it names
        rollup = model_charge_adds(rollup_model, overhead + rework, inference=rework)
    return CommitCharge(summary_adds=adds, rollup=rollup)


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
    over_cap = 0
    if settlement.has_reservation:
        over_cap = budget.over_hold(charge, settlement.reserved_micro_usd)
    elif (
        capped and settlement.from_overhead_reserve and settlement.overhead_reserve_left is not None
    ):
        over_cap = budget.over_reserve(charge, settlement.overhead_reserve_left)
    if over_cap:
        logger.error(
            "charge exceeds reservation",
            extra={"charge": charge, "reserved": settlement.reserved_micro_usd},
        )
    succeeded = sum(1 for o in outcomes if o.status == "SUCCEEDED")
    move = budget.settle(
        charge,
        held=settlement.reserved_micro_usd if settlement.has_reservation else None,
        capped=capped,
        from_overhead_reserve=settlement.from_overhead_reserve,
    )
    adds = {
        "images_succeeded": succeeded,
        "images_failed": len(outcomes) - succeeded,
        "cost_micro_usd": inference,
        SPENT: charge,
        "chunk_commits": 1 if settlement.chunk_commit else 0,
        **usage.ledger_fields(),
    }
    if settlement.rework_micro_usd:
        adds["rework_micro_usd"] = settlement.rework_micro_usd
    if settlement.unconfirmed_calls:
        adds["unconfirmed_calls"] = settlement.unconfirmed_calls
    if over_cap:
        # absent otherwise, as rework is: a batch within its holds keeps the summary it had
        adds["over_cap_micro_usd"] = over_cap
    return {**adds, **reuse_adds(outcomes), **move.adds()}


def reuse_adds(outcomes: Sequence[ImageOutcome]) -> dict[str, int]:
    """Reused images and the inference they did not buy; absent when none were, so a batch
    without reuse keeps the summary and rollup it always had."""
    reused = [o for o in outcomes if o.reused and o.status == "SUCCEEDED"]
    if not reused:
        return {}
    return {
        "images_reused": len(reused),
        "reuse_saved_micro_usd": sum(o.reuse_saved_micro_usd or 0 for o in reused),
    }


def model_charge_adds(model: str, charge: int, *, inference: int = 0) -> dict[str, int]:
    """The day rollup's counters for a charge that is all one model's (no images: a contact
    sheet, an endpoint's overhead, what a batch was charged outside its commits)."""
    adds = {SPENT: charge, f"model_spent#{model}": charge}
    if inference:
        adds["inference_micro_usd"] = inference
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
        SPENT: inference + overhead,
    }
    adds.update(reuse_adds(outcomes))
    for model in models:
        mine = [o for o in outcomes if o.model == model]
        model_inference = sum(o.cost_micro_usd for o in mine)
        adds[f"model_images#{model}"] = sum(1 for o in mine if o.status == "SUCCEEDED")
        adds[f"model_spent#{model}"] = model_inference + shares[model]
    return adds
