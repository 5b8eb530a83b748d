"""A charge past its hold is spent money the hold did not cover: it is counted on the summary
as over cap and said in the charge note, never only logged."""

from __future__ import annotations

from imagebatch.costs import budget
from imagebatch.costs.settlement import Settlement, price_commit
from imagebatch.costs.terms import charge_note
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import ImageOutcome


def _outcome(cost: int) -> ImageOutcome:
    return ImageOutcome(
        image_id="a-1",
        item_id="a",
        chunk_id="c-1",
        status="SUCCEEDED",
        backend="bedrock",
        model="stability.sd3-5-large-v1:0",
        cost_micro_usd=cost,
        seed=1,
        prompt_sha256="0" * 64,
    )


def test_the_excess_of_a_charge_over_its_hold_is_counted_over_cap() -> None:
    assert budget.over_hold(charge=130, held=100) == 30
    assert budget.over_hold(charge=90, held=100) == 0
    settlement = Settlement(chunk_id="c-1", reserved_micro_usd=100, has_reservation=True)
    charge = price_commit([_outcome(130)], settlement, own_write_units=0, capped=True)
    assert charge.summary_adds["over_cap_micro_usd"] == 30


def test_a_charge_within_its_hold_adds_no_over_cap_counter() -> None:
    settlement = Settlement(chunk_id="c-1", reserved_micro_usd=100, has_reservation=True)
    charge = price_commit([_outcome(80)], settlement, own_write_units=0, capped=True)
    assert "over_cap_micro_usd" not in charge.summary_adds


def test_the_charge_note_says_what_went_over_cap_even_when_charged_equals_total() -> None:
    record = BatchRecord.model_validate({"batch_id": "b", "over_cap_micro_usd": 30})
    assert record.over_cap_micro_usd == 30
    note = charge_note(1_000, 1_000, over_cap_micro_usd=30)
    assert note is not None
    assert "over cap" in note
    assert "$0.000030" in note


def test_a_charge_from_the_overhead_reserve_past_what_it_holds_is_over_cap() -> None:
    assert budget.over_reserve(charge=30, reserve_left=10) == 20
    assert budget.over_reserve(charge=30, reserve_left=-5) == 30
    assert budget.over_reserve(charge=10, reserve_left=30) == 0
    within = Settlement(chunk_id="c-1", from_overhead_reserve=True, overhead_reserve_left=200)
    assert (
        "over_cap_micro_usd"
        not in price_commit([_outcome(0)], within, own_write_units=0, capped=True).summary_adds
    )
    nothing = Settlement(chunk_id="c-1", from_overhead_reserve=True, overhead_reserve_left=0)
    charged = price_commit([_outcome(0)], nothing, own_write_units=0, capped=True)
    assert "over_cap_micro_usd" not in charged.summary_adds  # nothing charged, nothing over
    costly = Settlement(chunk_id="c-1", from_overhead_reserve=True, overhead_reserve_left=5)
    assert (
        price_commit([_outcome(12)], costly, own_write_units=0, capped=True).summary_adds[
            "over_cap_micro_usd"
        ]
        == 7
    )


class _Metered:
    def __init__(self) -> None:
        from imagebatch.costs.usage import Meter

        self.meter = Meter()

    def summary_write_units(self, batch_id: str, *, transactional: bool) -> int:
        return 1


def test_finalize_s_own_charge_past_the_overhead_reserve_is_over_cap() -> None:
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch.pipeline.finalize import _own_charge

    prices = load_aws_prices().region("us-east-1")
    summary = BatchRecord.model_validate(
        {"batch_id": "b", "max_cost_micro_usd": 1_000_000, "overhead_reserve_micro_usd": 0}
    )
    adds = _own_charge(
        summary,
        _Metered(),  # type: ignore[arg-type]
        _Metered(),  # type: ignore[arg-type]
        prices,
        None,
        failed_chunks=0,
    )
    assert adds["spent_micro_usd"] > 0
    assert adds["over_cap_micro_usd"] == adds["spent_micro_usd"]
    roomy = summary.model_copy(update={"overhead_reserve_micro_usd": 10**6})
    assert "over_cap_micro_usd" not in _own_charge(
        roomy,
        _Metered(),  # type: ignore[arg-type]
        _Metered(),  # type: ignore[arg-type]
        prices,
        None,
        failed_chunks=0,
    )
