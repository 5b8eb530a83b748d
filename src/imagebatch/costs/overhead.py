"""Instance time that is not inference: the idle tail worth paying, and who pays for what.

Self-hosted images are priced by their measured inference seconds (sagemaker.call_costs), but
an endpoint bills every second an instance is up: while it starts (cold start), while it
serves, and while it idles before scaling in. This module turns what AWS reports about the
endpoint's instances into instance sessions and charges every billed second to someone.

Idle tail (ski rental): an idle instance costs its price per second; stopping it and starting
it again for the next chunk costs the cold start's instance-seconds. Waiting idle for exactly
one cold start before scaling in never costs more than twice the best choice made with
hindsight, whatever the gap to the next chunk; waiting longer can. So the tail is the cold
start, rounded up to a minute (CloudWatch's period). The price cancels out.

What AWS reports (docs/sagemaker.md cites it): DescribeEndpoint's DesiredInstanceCount and
CurrentInstanceCount, sampled on a schedule and on each "SageMaker Endpoint State Change"
event. An instance is billed from the moment more are desired than there were (it is being
provisioned) until the count drops again; it is ready when CurrentInstanceCount includes it.

Attribution rule, per window (a maximal stretch with at least one instance billed):
  0. Inference: each request's calls, already charged to its batch by the result path
     (images + rework). Taken as charged, to the micro-dollar.
  1. Cold start (an instance's start -> ready) goes to the batches whose requests were
     outstanding during it (received before it was ready, not completed before it started):
     they caused it. Split by their number of requests.
  2. The rest of the window's billed cost (idle gaps, the idle tail, and the rounding between
     per-call charges and the window's instance-seconds) goes to the batches served in the
     window, by their inference seconds: their work kept the instance up.
  3. What has no batch to go to (a window that served nothing, a cold start nobody waited
     for, the instance the endpoint is created with) is UNATTRIBUTED, reported as such.
So, per window: inference + cold start + idle + unattributed = round(instance-seconds x
price), exactly. Each part is rounded once and split by largest remainder.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imagebatch.costs.prices import InstancePrice
from imagebatch.models.money import round_micro

UNATTRIBUTED = "(unattributed idle)"
CLOUDWATCH_PERIOD_S = 60


def scale_in_cooldown_s(cold_start_s: float) -> int:
    """Idle seconds worth paying before scaling in: the cold start, to the minute above."""
    if cold_start_s <= 0:
        raise ValueError("a cold start takes some time")
    return math.ceil(cold_start_s / CLOUDWATCH_PERIOD_S) * CLOUDWATCH_PERIOD_S


class InstanceSample(BaseModel):
    """One look at the endpoint's variant, as DescribeEndpoint reports it."""

    model_config = ConfigDict(frozen=True)
    at: datetime
    desired: int = Field(ge=0)
    current: int = Field(ge=0)

    @property
    def billed(self) -> int:
        """Instances being paid for: those up, and those being provisioned."""
        return max(self.desired, self.current)


class InstanceSession(BaseModel):
    """One instance's life: billed from start to end, serving from ready."""

    model_config = ConfigDict(frozen=True)
    start: datetime
    ready: datetime | None
    end: datetime

    @property
    def seconds(self) -> Decimal:
        return _seconds(self.start, self.end)

    @property
    def cold_seconds(self) -> Decimal:
        return _seconds(self.start, min(self.ready or self.end, self.end))


class EndpointRequest(BaseModel):
    """One async request as the result path recorded it: when SageMaker received and finished
    it, the seconds its calls took and what the batch was charged for them."""

    model_config = ConfigDict(frozen=True)
    batch_id: str
    request_id: str
    received_at: datetime
    completed_at: datetime
    inference_seconds: Decimal = Field(ge=0)
    inference_micro_usd: int = Field(ge=0)


class OverheadLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    charged_to: str  # a batch id, or UNATTRIBUTED
    kind: Literal["cold_start", "idle"]
    micro_usd: int


class Window(BaseModel):
    """A maximal stretch of time with at least one instance billed, and its attribution."""

    model_config = ConfigDict(frozen=True)
    start: datetime
    end: datetime
    closed: bool  # False: still running at the last sample (not attributed yet)
    sessions: tuple[InstanceSession, ...]
    instance_seconds: Decimal
    billed_micro_usd: int
    inference_micro_usd: int = 0
    lines: tuple[OverheadLine, ...] = ()
    # the batches whose requests completed in the window and their inference seconds in it:
    # each is charged (its wake held at admission settled) even when the rule left it
    # nothing to pay, and what stays unattributed is shown with them, by those seconds
    served: dict[str, Decimal] = Field(default_factory=dict)

    def by_batch(self) -> dict[str, int]:
        charges: dict[str, int] = {}
        for line in self.lines:
            charges[line.charged_to] = charges.get(line.charged_to, 0) + line.micro_usd
        return charges


def _seconds(start: datetime, end: datetime) -> Decimal:
    delta = end - start
    micro = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(max(micro, 0)) / 1_000_000


def sessions_from_samples(
    samples: Iterable[InstanceSample], until: datetime
) -> tuple[list[InstanceSession], list[InstanceSession]]:
    """(closed sessions, sessions still open at `until`) from successive samples.

    Instances are interchangeable for billing, so which one a drop removes does not change
    the seconds; one not yet ready goes first (a cancelled scale-out), else the oldest."""
    open_: list[tuple[datetime, datetime | None]] = []
    closed: list[InstanceSession] = []
    for sample in sorted(samples, key=lambda s: s.at):
        while len(open_) < sample.billed:
            open_.append((sample.at, None))
        ready = sum(1 for _, r in open_ if r is not None)
        for index, (start, was_ready) in enumerate(open_):
            if ready >= min(sample.current, sample.billed):
                break
            if was_ready is None:
                open_[index] = (start, sample.at)
                ready += 1
        while len(open_) > sample.billed:
            unready = [i for i, (_, r) in enumerate(open_) if r is None]
            start, was_ready = open_.pop(unready[0] if unready else 0)
            closed.append(InstanceSession(start=start, ready=was_ready, end=sample.at))
    still = [InstanceSession(start=s, ready=r, end=until) for s, r in open_]
    return closed, still


def windows(
    closed: Sequence[InstanceSession], still_open: Sequence[InstanceSession]
) -> list[Window]:
    """Group sessions into windows: overlapping sessions share one (unpriced yet)."""
    tagged = [(s, True) for s in closed] + [(s, False) for s in still_open]
    tagged.sort(key=lambda t: t[0].start)
    groups: list[list[tuple[InstanceSession, bool]]] = []
    end: datetime | None = None
    for session, is_closed in tagged:
        if end is None or session.start > end:
            groups.append([])
            end = session.end
        groups[-1].append((session, is_closed))
        end = max(end, session.end)
    result = []
    for group in groups:
        sessions = tuple(s for s, _ in group)
        result.append(
            Window(
                start=min(s.start for s in sessions),
                end=max(s.end for s in sessions),
                closed=all(c for _, c in group),
                sessions=sessions,
                instance_seconds=sum((s.seconds for s in sessions), Decimal(0)),
                billed_micro_usd=0,
            )
        )
    return result


def _split(total: int, weights: dict[str, Decimal]) -> dict[str, int]:
    """Largest-remainder split of an integer by weights (ties by key, so it is stable)."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if not positive:
        return {UNATTRIBUTED: total} if total else {}
    scale = sum(positive.values())
    exact = {k: Decimal(total) * w / scale for k, w in positive.items()}
    shares = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    for key in sorted(exact, key=lambda k: (shares[k] - exact[k], k))[:left]:
        shares[key] += 1
    return {k: v for k, v in shares.items() if v}


def attribute_window(
    window: Window, requests: Sequence[EndpointRequest], price: InstancePrice
) -> Window:
    """The window priced and every micro-dollar of it charged (see the module rule)."""
    per_second = price.micro_usd_per_second
    billed = round_micro(window.instance_seconds * per_second)
    served = [r for r in requests if window.start <= r.completed_at <= window.end]
    inference = sum(r.inference_micro_usd for r in served)
    overhead = billed - inference
    lines: list[OverheadLine] = []
    if overhead < 0:
        # Calls measured longer than the instance was billed (clock skew between the
        # container and AWS): shown, never hidden in someone else's share.
        lines.append(OverheadLine(charged_to=UNATTRIBUTED, kind="idle", micro_usd=overhead))
        overhead = 0
    left = overhead
    for session in sorted(window.sessions, key=lambda s: s.start):
        cold = min(round_micro(session.cold_seconds * per_second), left)
        if cold <= 0:
            continue
        left -= cold
        ready = session.ready or session.end
        waiting: dict[str, Decimal] = {}
        for r in requests:
            if r.received_at <= ready and r.completed_at >= session.start:
                waiting[r.batch_id] = waiting.get(r.batch_id, Decimal(0)) + 1
        lines.extend(
            OverheadLine(charged_to=k, kind="cold_start", micro_usd=v)
            for k, v in _split(cold, waiting).items()
        )
    seconds: dict[str, Decimal] = {}
    for r in served:
        seconds[r.batch_id] = seconds.get(r.batch_id, Decimal(0)) + r.inference_seconds
    seconds = dict(sorted(seconds.items()))
    lines.extend(
        OverheadLine(charged_to=k, kind="idle", micro_usd=v)
        for k, v in _split(left, seconds).items()
    )
    return window.model_copy(
        update={
            "billed_micro_usd": billed,
            "inference_micro_usd": inference,
            "lines": tuple(lines),
            "served": seconds,
        }
    )


def unattributed_shares(total: int, seconds: Mapping[str, Decimal]) -> dict[str, int]:
    """What of `total` (a window's unattributed idle) each batch active in the window is
    shown with, by its inference seconds (all without any: equally): floored to the
    micro-dollar, what the floors leave to the one with the most seconds (ties by id), so
    the shares add up to `total`. Shown beside the batches, never charged: a cap is hard,
    and the rule charged each batch all it caused already. None for a negative total (clock
    skew) or no batch active."""
    if total <= 0 or not seconds:
        return {}
    weights = (
        dict(seconds)
        if any(w > 0 for w in seconds.values())
        else dict.fromkeys(seconds, Decimal(1))
    )
    scale = sum(weights.values())
    shares = {k: math.floor(Decimal(total) * w / scale) for k, w in weights.items()}
    largest = min(weights, key=lambda k: (-weights[k], k))
    shares[largest] += total - sum(shares.values())
    return {k: v for k, v in shares.items() if v}
