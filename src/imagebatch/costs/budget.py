"""A capped batch's budget as pure arithmetic: what each step moves between the summary's
counters, and what must hold on the summary for the step to happen.

A batch with max_cost_micro_usd (the cap) keeps, on its summary, at every write:

    spent + reserved + budget_left + overhead_reserve = cap

spent: charged; reserved: held by running chunks; budget_left: what a chunk may still hold;
overhead_reserve: held back at ingest for bookkeeping that spends after the budget is gone
(refused chunks, finalize, the contact sheet). A batch admitted while the endpoint is at zero
also holds its wake (the cold start and idle tail it causes) at ingest: part of reserved,
counted apart as wake_held, settled by the endpoint observer's charge of the first window
that served the batch, or given back to budget_left at finalize when none did.

Every step returns a BudgetMove whose counter deltas sum to zero, so a move applied to a
summary that keeps the invariant keeps it. The adapters (aws.ledger, aws.ledger_holds,
aws.endpoint_usage) only translate a move into DynamoDB: one ADD per counter it touches, and
its requirement as the update's condition, so two writers can never both take the last of
the budget. An uncapped batch has no invariant to keep: only spent moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imagebatch.costs.overhead import UNATTRIBUTED, OverheadLine

SPENT = "spent_micro_usd"
RESERVED = "reserved_micro_usd"
BUDGET_LEFT = "budget_left_micro_usd"
OVERHEAD_RESERVE = "overhead_reserve_micro_usd"
# The part of reserved that is the endpoint's wake, held at ingest (not one of the four).
WAKE_HELD = "wake_held_micro_usd"


@dataclass(frozen=True)
class BudgetMove:
    """Deltas of the summary's budget counters (None: the move leaves it alone, which is not
    the same as ADDing 0: ADD creates a counter an uncapped summary does not have)."""

    spent: int | None = None
    reserved: int | None = None
    budget_left: int | None = None
    overhead_reserve: int | None = None
    # The move may happen only while budget_left >= this (None: whatever budget_left is).
    needs_budget_left: int | None = None
    # The move may happen only while overhead_reserve == this (the amount it was read as).
    needs_overhead_reserve: int | None = None
    # The part of `reserved` that is the wake's (a detail of reserved, not a fifth counter).
    wake_held: int | None = None
    # The move may happen only while wake_held == this (the amount it was read as).
    needs_wake_held: int | None = None

    def adds(self) -> dict[str, int]:
        """The counters to ADD to, by their ledger names."""
        deltas = {
            SPENT: self.spent,
            RESERVED: self.reserved,
            BUDGET_LEFT: self.budget_left,
            OVERHEAD_RESERVE: self.overhead_reserve,
        }
        deltas[WAKE_HELD] = self.wake_held
        return {name: delta for name, delta in deltas.items() if delta is not None}

    @property
    def balanced(self) -> bool:
        """Whether the move keeps spent + reserved + budget_left + overhead_reserve."""
        adds = self.adds()
        adds.pop(WAKE_HELD, None)  # part of reserved, already in its delta
        return sum(adds.values()) == 0


def opening_budget_left(cap: int, overhead_reserve: int, spent: int = 0, wake: int = 0) -> int:
    """budget_left of a new summary: the cap less what ingest holds back, what is already
    spent and the endpoint's wake (held: reserved = wake), so
    spent + wake + budget_left + overhead_reserve = cap."""
    return cap - overhead_reserve - spent - wake


def hold(amount: int) -> BudgetMove:
    """A chunk holds `amount` before it spends: budget_left -> reserved, only while
    budget_left >= amount (else the chunk must not run). Balanced."""
    return BudgetMove(reserved=amount, budget_left=-amount, needs_budget_left=amount)


def settle(
    charge: int, *, held: int | None, capped: bool, from_overhead_reserve: bool = False
) -> BudgetMove:
    """A commit charges `charge` (spent += charge); the money comes from, in this order:

    - its hold (`held`, not None): reserved -= held and budget_left gets back held - charge;
      a charge past its hold takes the excess from budget_left (which may go below zero:
      the money is spent, and the invariant still holds);
    - a capped batch's overhead reserve, for bookkeeping that spends without a hold (a chunk
      refused for budget, finalize): overhead_reserve -= charge;
    - a capped batch's budget_left otherwise.

    Unconditional: what a commit charges was spent already. Balanced when capped or held;
    an uncapped commit moves spent alone.
    """
    if held is not None:
        return BudgetMove(spent=charge, reserved=-held, budget_left=held - charge)
    if capped and from_overhead_reserve:
        return BudgetMove(spent=charge, overhead_reserve=-charge)
    if capped:
        return BudgetMove(spent=charge, budget_left=-charge)
    return BudgetMove(spent=charge)


def over_hold(charge: int, held: int) -> int:
    """What a settlement charged past its hold: spent all the same (the money is gone), but
    past what the cap was checked against, so the summary counts it as over cap
    (`over_cap_micro_usd`) and every report says so; 0 when the hold covered the charge."""
    return max(charge - held, 0)


def over_reserve(charge: int, reserve_left: int) -> int:
    """What a charge paid from the overhead reserve (finalize, a chunk refused for budget)
    takes past what the reserve held when it was read (`reserve_left`): spent all the same,
    but past the cap's reserve, so counted as over cap; 0 when the reserve covered it."""
    return max(charge - max(reserve_left, 0), 0)


def write_off(amount: int) -> BudgetMove:
    """A hold no commit settled belongs to an attempt that died after it may have spent: the
    whole hold (an upper bound of what it spent) becomes spent: reserved -> spent. Balanced;
    the hold item's own condition makes it once-only."""
    return BudgetMove(spent=amount, reserved=-amount)


def release_overhead_reserve(amount: int) -> BudgetMove | None:
    """What is left of the overhead reserve (`amount`, as read) moves into budget_left, so a
    settled batch's last spender (the contact sheet) may hold it; only while the reserve is
    still `amount`. Balanced. None: nothing to release."""
    if amount <= 0:
        return None
    return BudgetMove(overhead_reserve=-amount, budget_left=amount, needs_overhead_reserve=amount)


def release_wake(held: int) -> BudgetMove | None:
    """A wake no window will charge (the endpoint never served the batch: all reused, all on
    Bedrock) goes back to budget_left: reserved -> budget_left, only while the wake is still
    `held` (as read), so a window charging it meanwhile and this release never both take it.
    Balanced. None: nothing held."""
    if held <= 0:
        return None
    return BudgetMove(reserved=-held, budget_left=held, wake_held=-held, needs_wake_held=held)


def last_spender_room(budget_left: int, overhead_reserve: int) -> int:
    """What a settled batch's last spender may hold: nothing else spends after finalize, so
    the overhead reserve is its too (released only when budget_left alone falls short)."""
    return budget_left + overhead_reserve


@dataclass(frozen=True)
class OverheadCharge:
    """A batch's share of an endpoint window, cut to what its budget allows."""

    kept: tuple[OverheadLine, ...]
    over_cap_micro_usd: int
    move: BudgetMove

    @property
    def micro_usd(self) -> int:
        return sum(line.micro_usd for line in self.kept)

    @property
    def lines(self) -> list[OverheadLine]:
        """The kept lines, and what the cap left out as unattributed idle (shown, not lost)."""
        over = self.over_cap_micro_usd
        rest = [OverheadLine(charged_to=UNATTRIBUTED, kind="idle", micro_usd=over)] if over else []
        return [*self.kept, *rest]

    def of_kind(self, kind: str) -> int:
        return sum(line.micro_usd for line in self.kept if line.kind == kind)


def bound_overhead(
    lines: Sequence[OverheadLine],
    *,
    budget_left: int | None,
    known: bool = True,
    wake_held: int = 0,
) -> OverheadCharge:
    """A batch's cold start and idle of a window, charged at most its wake held at ingest
    (`wake_held`) and its budget_left (None: an uncapped batch, charged in full; `known`
    False: a batch the ledger does not know, charged nothing). The wake's hold is settled
    whole, whatever the share (what it did not use goes back to budget_left), only while it
    is still `wake_held`; the rest is spent from budget_left only while budget_left still
    covers it, so a chunk holding meanwhile cannot be overrun. Balanced when capped."""
    share = sum(line.micro_usd for line in lines)
    held = wake_held if budget_left is not None and known else 0
    room = share if budget_left is None else budget_left + held
    if not known:
        room = 0
    kept = _bounded(lines, max(min(room, share), 0))
    charge = sum(line.micro_usd for line in kept)
    if budget_left is None or not known:
        move = BudgetMove(spent=charge)
    elif held:
        past_hold = charge - held
        move = BudgetMove(
            spent=charge,
            reserved=-held,
            budget_left=-past_hold,
            needs_budget_left=past_hold if past_hold > 0 else None,
            wake_held=-held,
            needs_wake_held=held,
        )
    else:
        move = BudgetMove(spent=charge, budget_left=-charge, needs_budget_left=charge)
    return OverheadCharge(kept=tuple(kept), over_cap_micro_usd=share - charge, move=move)


def _bounded(lines: Sequence[OverheadLine], room: int) -> list[OverheadLine]:
    """The lines cut down to `room` micro-dollars, cold start first (it came first)."""
    kept = []
    for line in sorted(lines, key=lambda ln: ln.kind != "cold_start"):
        amount = min(line.micro_usd, room)
        room -= amount
        if amount:
            kept.append(line.model_copy(update={"micro_usd": amount}))
    return kept
