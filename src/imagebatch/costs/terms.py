"""The words every report uses for a batch's money, and why two of its figures can differ.

One vocabulary across `imagebatch cost`, `batches`, `costs`, summary.json and index.html:

- inference, orchestration, storage (1 month): the cost categories, each priced once from the
  summary's counters (costs.usage.summary_costs) and rounded once;
- total: inference + orchestration + storage;
- charged: what the ledger charged against the budget (`spent_micro_usd`). Each settlement is
  rounded up to a whole micro-dollar when it happens, and a hold no commit settled is charged
  in full, so charged can sit a little above the total;
- of which Lambda INIT, logs, traces: the orchestration's telemetry lines (costs.telemetry),
  priced per Lambda invocation the ledger counted;
- estimate: ingest's estimate before the run; budget: the manifest's max_cost_usd;
- reused, saved by reuse: images copied from an earlier batch's image of the same identity
  (docs/reuse.md), counted among those made, and the inference they did not buy.
"""

from __future__ import annotations

from imagebatch.models.money import format_usd

CATEGORY_LABELS = {
    "inference": "inference",
    "orchestration": "orchestration",
    "storage": "storage (1 month)",
    "total": "total",
}
# the orchestration's telemetry lines (api.responses.Telemetry's fields), shown under it
TELEMETRY_LABELS = {
    "init": "  of which Lambda INIT",
    "logs": "  of which CloudWatch Logs",
    "traces": "  of which X-Ray traces",
}
CHARGED = "charged to budget"
ESTIMATE = "estimate (before run)"
BUDGET = "budget (max_cost_usd)"
REUSED = "  of which reused"
REUSE_SAVED = "saved by reuse"


def charge_note(
    total_micro_usd: int,
    charged_micro_usd: int,
    unsettled_micro_usd: int = 0,
    *,
    over_cap_micro_usd: int = 0,
) -> str | None:
    """One line saying why the charge differs from the total, and what of it went over cap
    (a settlement past its hold); None when they agree and nothing went over cap."""
    difference = charged_micro_usd - total_micro_usd
    over_cap = (
        f"over cap: {format_usd(over_cap_micro_usd)} was charged past the budget holds that "
        "covered it (spent all the same, beyond what max_cost_usd was checked against)"
        if over_cap_micro_usd
        else None
    )
    if difference == 0:
        return over_cap
    direction = "more" if difference > 0 else "less"
    reasons = [
        "each settlement is rounded up to a whole micro-dollar when it is charged, the total "
        "is priced from the counters and rounded once"
    ]
    if unsettled_micro_usd:
        reasons.append(
            f"{format_usd(unsettled_micro_usd)} of budget holds no commit settled (attempts that "
            "died) is charged in full"
        )
    note = (
        f"charged {format_usd(charged_micro_usd)} is {format_usd(abs(difference))} {direction} "
        f"than the total {format_usd(total_micro_usd)}: " + "; ".join(reasons)
    )
    return f"{note}. {over_cap}" if over_cap else note
