"""The budget's arithmetic (costs.budget), pure: no AWS, no moto.

Every step keeps spent + reserved + budget_left + overhead_reserve = cap; a summary walked
through any sequence of steps that the ledger's conditions allow keeps it, and budget_left
falls below zero only by what commits charged beyond their holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagebatch.costs import budget
from imagebatch.costs.budget import BudgetMove
from imagebatch.costs.overhead import UNATTRIBUTED, OverheadLine

amounts = st.integers(min_value=0, max_value=10**12)


@dataclass(frozen=True)
class Summary:
    """The four counters as the ledger keeps them."""

    spent: int
    reserved: int
    budget_left: int
    overhead_reserve: int

    @property
    def total(self) -> int:
        return self.spent + self.reserved + self.budget_left + self.overhead_reserve

    def allows(self, move: BudgetMove) -> bool:
        """What the move's DynamoDB condition checks."""
        if move.needs_budget_left is not None and self.budget_left < move.needs_budget_left:
            return False
        return not (
            move.needs_overhead_reserve is not None
            and self.overhead_reserve != move.needs_overhead_reserve
        )

    def apply(self, move: BudgetMove) -> Summary:
        return replace(
            self,
            spent=self.spent + (move.spent or 0),
            reserved=self.reserved + (move.reserved or 0),
            budget_left=self.budget_left + (move.budget_left or 0),
            overhead_reserve=self.overhead_reserve + (move.overhead_reserve or 0),
        )


def opened(cap: int, reserve: int, spent: int = 0) -> Summary:
    left = budget.opening_budget_left(cap, reserve, spent)
    return Summary(spent=spent, reserved=0, budget_left=left, overhead_reserve=reserve)


@given(cap=amounts, reserve=amounts, spent=amounts)
def test_a_new_summary_keeps_the_invariant(cap: int, reserve: int, spent: int) -> None:
    assert opened(cap, reserve, spent).total == cap


@given(amount=amounts)
def test_a_hold_moves_budget_left_to_reserved_only_while_it_is_there(amount: int) -> None:
    move = budget.hold(amount)
    assert move.balanced
    assert move.adds() == {"reserved_micro_usd": amount, "budget_left_micro_usd": -amount}
    assert move.needs_budget_left == amount


@given(charge=amounts, held=amounts)
def test_a_settled_hold_returns_what_the_charge_did_not_use(charge: int, held: int) -> None:
    move = budget.settle(charge, held=held, capped=True)
    assert move.balanced
    assert move.adds() == {
        "spent_micro_usd": charge,
        "reserved_micro_usd": -held,
        "budget_left_micro_usd": held - charge,
    }
    assert move.needs_budget_left is None  # the money was spent already


@given(charge=amounts)
def test_a_capped_commit_without_a_hold_pays_from_the_reserve_or_budget_left(charge: int) -> None:
    from_reserve = budget.settle(charge, held=None, capped=True, from_overhead_reserve=True)
    assert from_reserve.balanced
    assert from_reserve.adds() == {
        "spent_micro_usd": charge,
        "overhead_reserve_micro_usd": -charge,
    }
    plain = budget.settle(charge, held=None, capped=True)
    assert plain.balanced
    assert plain.adds() == {"spent_micro_usd": charge, "budget_left_micro_usd": -charge}


@given(charge=amounts, from_reserve=st.booleans())
def test_an_uncapped_commit_moves_spent_alone(charge: int, from_reserve: bool) -> None:
    # ADDing 0 to budget_left would create a counter an uncapped summary does not keep
    move = budget.settle(charge, held=None, capped=False, from_overhead_reserve=from_reserve)
    assert move.adds() == {"spent_micro_usd": charge}


@given(amount=amounts)
def test_a_write_off_charges_the_whole_hold(amount: int) -> None:
    move = budget.write_off(amount)
    assert move.balanced
    assert move.adds() == {"spent_micro_usd": amount, "reserved_micro_usd": -amount}


@given(amount=st.integers(min_value=-(10**6), max_value=10**12))
def test_releasing_the_reserve_moves_it_all_while_unchanged(amount: int) -> None:
    move = budget.release_overhead_reserve(amount)
    if amount <= 0:
        assert move is None
        return
    assert move is not None and move.balanced
    assert move.adds() == {"budget_left_micro_usd": amount, "overhead_reserve_micro_usd": -amount}
    assert move.needs_overhead_reserve == amount


@given(held=st.integers(min_value=-(10**6), max_value=10**12))
def test_a_wake_no_window_charges_goes_back_to_budget_left_while_unchanged(held: int) -> None:
    move = budget.release_wake(held)
    if held <= 0:
        assert move is None
        return
    assert move is not None and move.balanced
    assert move.adds() == {
        "reserved_micro_usd": -held,
        "budget_left_micro_usd": held,
        "wake_held_micro_usd": -held,
    }
    assert move.needs_wake_held == held


def test_the_last_spender_may_use_the_reserve_too() -> None:
    assert budget.last_spender_room(budget_left=300, overhead_reserve=200) == 500


steps = st.one_of(
    st.tuples(st.just("hold"), amounts),
    st.tuples(st.just("settle"), amounts),
    st.tuples(st.just("write_off"), st.just(0)),
    st.tuples(st.just("refused"), amounts),
    st.tuples(st.just("release"), st.just(0)),
    st.tuples(st.just("overhead"), amounts),
)


@given(
    cap=amounts,
    reserve=st.integers(min_value=0, max_value=10**9),
    walk=st.lists(steps, max_size=30),
)
def test_any_walk_the_conditions_allow_keeps_the_invariant(
    cap: int, reserve: int, walk: list[tuple[str, int]]
) -> None:
    # GIVEN a new capped summary and holds still open
    summary = opened(cap, min(reserve, cap))
    holds: list[int] = []
    overrun = 0
    for step, amount in walk:
        # WHEN a step the ledger would allow is applied
        move: BudgetMove | None
        if step == "hold":
            move = budget.hold(amount)
        elif step == "settle" and holds:
            held = holds.pop()
            overrun += max(0, amount - held)
            move = budget.settle(amount, held=held, capped=True)
        elif step == "write_off" and holds:
            move = budget.write_off(holds.pop())
        elif step == "refused":
            move = budget.settle(amount % 1000, held=None, capped=True, from_overhead_reserve=True)
        elif step == "release":
            move = budget.release_overhead_reserve(summary.overhead_reserve)
        elif step == "overhead":
            line = OverheadLine(charged_to="b", kind="idle", micro_usd=amount)
            move = budget.bound_overhead([line], budget_left=summary.budget_left).move
        else:
            continue
        if move is None or not summary.allows(move):
            continue
        if step == "hold":
            holds.append(amount)
        summary = summary.apply(move)
        # THEN the counters still add up to the cap
        assert summary.total == cap
    # and budget_left went below zero only by what commits charged beyond their holds:
    # holds and endpoint overhead take from it only while it covers them
    assert summary.budget_left >= -overrun


def lines(cold: int, idle: int) -> list[OverheadLine]:
    return [
        OverheadLine(charged_to="b", kind="idle", micro_usd=idle),
        OverheadLine(charged_to="b", kind="cold_start", micro_usd=cold),
    ]


@given(cold=amounts, idle=amounts, left=st.integers(min_value=-(10**6), max_value=10**12))
def test_overhead_is_charged_at_most_budget_left_cold_start_first(
    cold: int, idle: int, left: int
) -> None:
    charge = budget.bound_overhead(lines(cold, idle), budget_left=left)
    assert charge.move.balanced
    assert charge.micro_usd == max(0, min(left, cold + idle))
    assert charge.of_kind("cold_start") == min(cold, max(0, left))
    assert charge.micro_usd + charge.over_cap_micro_usd == cold + idle
    # the rest is shown as the endpoint's unattributed idle, not lost
    assert sum(ln.micro_usd for ln in charge.lines) == cold + idle
    unattributed = [ln for ln in charge.lines if ln.charged_to == UNATTRIBUTED]
    assert sum(ln.micro_usd for ln in unattributed) == charge.over_cap_micro_usd
    assert charge.move.needs_budget_left == charge.micro_usd


@given(cold=amounts, idle=amounts)
def test_an_uncapped_batch_is_charged_its_whole_share(cold: int, idle: int) -> None:
    charge = budget.bound_overhead(lines(cold, idle), budget_left=None)
    assert charge.micro_usd == cold + idle and charge.over_cap_micro_usd == 0
    assert charge.move.adds() == {"spent_micro_usd": cold + idle}
    assert charge.move.needs_budget_left is None


@pytest.mark.parametrize("budget_left", [None, 10**9])
def test_a_batch_the_ledger_does_not_know_is_charged_nothing(budget_left: int | None) -> None:
    charge = budget.bound_overhead(lines(5, 7), budget_left=budget_left, known=False)
    assert charge.micro_usd == 0 and charge.over_cap_micro_usd == 12
