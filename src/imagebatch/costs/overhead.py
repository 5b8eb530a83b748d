"""Instance time that is not inference: the scale-in cooldown, and who pays for it.

Self-hosted images are priced by their measured inference seconds (sagemaker.call_costs), but
an endpoint also bills while an instance starts (cold start) and while it idles before scaling
in. That time is real money and belongs to the batches that caused it.

Scale-in cooldown (ski rental): an idle instance costs its price per second; stopping it and
starting it again for the next chunk costs the cold start's instance-seconds (plus its wait).
Waiting idle for exactly one cold start before scaling in never costs more than twice the best
choice made with hindsight, whatever the gap to the next chunk; waiting longer can. So the
cooldown is the cold start duration, rounded up to a minute (CloudWatch's period). The price
cancels out: both sides are seconds of the same instance. At ml.inf2.xlarge ($0.99/h) the
default 600 s is $0.165 of idle time, the price of the cold start it avoids.

Attribution rule, per instance session (a scale-out until its scale-in):
  1. Cold start (scale-out -> instance ready) is charged to the batches that had requests
     waiting when the instance became ready: those requests caused the scale-out. Split by
     their number of waiting requests.
  2. The rest of the session that was not inference (idle gaps and the cooldown tail) is
     charged to the batches served in the session, in proportion to their inference seconds:
     their work is what kept the instance up.
  3. A session that served nothing is reported under UNATTRIBUTED.
Each session is rounded once and split by largest remainder, so the shares add up exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imagebatch.costs.prices import InstancePrice
from imagebatch.models.money import round_micro

UNATTRIBUTED = "(unattributed)"
CLOUDWATCH_PERIOD_S = 60


class ScaleEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["scale_out", "scale_in"]
    at: datetime
    # scale_out: when the new instance passed /ping and took requests.
    ready_at: datetime | None = None
    instances_after: int = Field(ge=0)


class InferenceSpan(BaseModel):
    """One async request (one chunk) as the endpoint saw it."""

    model_config = ConfigDict(frozen=True)
    batch_id: str
    submitted_at: datetime
    started_at: datetime
    seconds: float = Field(ge=0)


def scale_in_cooldown_s(cold_start_s: float) -> int:
    """Idle seconds worth paying before scaling in: the cold start, to the minute above."""
    if cold_start_s <= 0:
        raise ValueError("a cold start takes some time")
    return math.ceil(cold_start_s / CLOUDWATCH_PERIOD_S) * CLOUDWATCH_PERIOD_S


def _sessions(events: Sequence[ScaleEvent], until: datetime) -> list[tuple[ScaleEvent, datetime]]:
    """Pairs each scale-out with the first later scale-in (one instance per session)."""
    outs: list[ScaleEvent] = []
    sessions: list[tuple[ScaleEvent, datetime]] = []
    for event in sorted(events, key=lambda e: e.at):
        if event.kind == "scale_out":
            outs.append(event)
        elif outs:
            sessions.append((outs.pop(0), event.at))
    sessions.extend((out, until) for out in outs)
    return sessions


def _split(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of an integer by weights."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if total == 0 or not positive:
        return {}
    scale = sum(positive.values())
    exact = {k: total * w / scale for k, w in positive.items()}
    shares = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    for key in sorted(exact, key=lambda k: (shares[k] - exact[k], k))[:left]:
        shares[key] += 1
    return shares


def _micro(seconds: float, price: InstancePrice) -> int:
    return round_micro(Decimal(str(max(seconds, 0.0))) * price.micro_usd_per_second)


def attribute_overhead(
    events: Sequence[ScaleEvent],
    spans: Sequence[InferenceSpan],
    price: InstancePrice,
    *,
    until: datetime,
) -> dict[str, int]:
    """Micro-dollars of cold-start and idle instance time per batch (see the module rule)."""
    charges: dict[str, int] = {}
    for out, end in _sessions(events, until):
        ready = out.ready_at or out.at
        inside = [s for s in spans if out.at <= s.started_at < end]
        cold = (ready - out.at).total_seconds()
        billed = (end - out.at).total_seconds()
        idle = billed - cold - sum(s.seconds for s in inside)
        waiting: dict[str, float] = {}
        for span in inside:
            if span.submitted_at <= ready:
                waiting[span.batch_id] = waiting.get(span.batch_id, 0) + 1
        served: dict[str, float] = {}
        for span in inside:
            served[span.batch_id] = served.get(span.batch_id, 0) + span.seconds
        for weights, seconds in ((waiting, cold), (served, idle)):
            cost = _micro(seconds, price)
            shares = _split(cost, weights) if weights else {UNATTRIBUTED: cost}
            for batch_id, share in shares.items():
                if share:
                    charges[batch_id] = charges.get(batch_id, 0) + share
    return charges
