"""A simulated day of an asynchronous endpoint: requests queue, instances start (a cold start),
serve one request at a time, fail and are retried, and scale in after an idle tail.

The simulation is the ground truth the attribution is checked against: it knows every
instance's billed seconds, and it reports only what AWS would (DescribeEndpoint counts at each
change, the result path's request records), the way the stack's observer sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from imagebatch.costs.overhead import EndpointRequest, InstanceSample
from imagebatch.costs.prices import InstancePrice
from imagebatch.models.money import round_micro

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Submitted:
    batch_id: str
    arrival_s: int
    calls_s: tuple[int, ...]  # each pipeline call's whole seconds
    # The instance dies this many seconds into the request; the retry arrives 5 s later.
    dies_after_s: int | None = None
    # Whether the failure carries the calls finished before it (charged as rework).
    partial: bool = False


@dataclass
class _Instance:
    start: int
    ready: int
    busy_until: int
    last_done: int
    end: int | None = None


@dataclass
class Day:
    instances: list[_Instance] = field(default_factory=list)
    samples: list[InstanceSample] = field(default_factory=list)
    requests: list[EndpointRequest] = field(default_factory=list)
    end_s: int = 0

    def instance_seconds(self) -> int:
        return sum((i.end or self.end_s) - i.start for i in self.instances)


def simulate(  # noqa: C901 - one tick of the simulation reads best as one loop
    submitted: list[Submitted],
    price: InstancePrice,
    *,
    cold_start_s: int,
    idle_tail_s: int,
    max_instances: int,
    backlog_per_instance: int = 2,
    deployed_with: int = 0,
) -> Day:
    """Step through the day a second at a time until every request is done and every
    instance has scaled in. `deployed_with` instances start at 0 (InitialInstanceCount)."""
    per_second = price.micro_usd_per_second
    pending = sorted(submitted, key=lambda s: s.arrival_s)
    queue: list[tuple[Submitted, int, int]] = []  # (request, received_s, attempt)
    day = Day()
    day.instances.extend(
        _Instance(0, cold_start_s, cold_start_s, cold_start_s) for _ in range(deployed_with)
    )
    t = 0
    counter = 0
    last_counts = (0, 0)
    while pending or queue or any(i.end is None for i in day.instances):
        while pending and pending[0].arrival_s <= t:
            request = pending.pop(0)
            queue.append((request, t, 1))
        live = [i for i in day.instances if i.end is None]
        for instance in live:
            if instance.ready <= t and instance.busy_until <= t and queue:
                request, received, attempt = queue.pop(0)
                counter += 1
                request_id = f"r{counter}"
                calls = request.calls_s
                if request.dies_after_s is not None and attempt == 1:
                    ran = min(request.dies_after_s, sum(calls))
                    finished = []
                    elapsed = 0
                    for call in calls:
                        if elapsed + call > ran:
                            break
                        finished.append(call)
                        elapsed += call
                    charged = finished if request.partial else []
                    done = t + max(ran, 1)
                    pending.append(
                        Submitted(request.batch_id, done + 5, request.calls_s, None, False)
                    )
                    pending.sort(key=lambda s: s.arrival_s)
                else:
                    charged = list(calls)
                    done = t + sum(calls)
                instance.busy_until = done
                instance.last_done = done
                day.requests.append(
                    EndpointRequest(
                        batch_id=request.batch_id,
                        request_id=request_id,
                        received_at=at(received),
                        completed_at=at(done),
                        inference_seconds=Decimal(sum(charged)),
                        # what the result path charges: each call rounded once (call_totals)
                        inference_micro_usd=sum(round_micro(c * per_second) for c in charged),
                    )
                )
        live = [i for i in day.instances if i.end is None]
        backlogged = queue and (not live or len(queue) > backlog_per_instance * len(live))
        if backlogged and len(live) < max_instances:
            day.instances.append(_Instance(t, t + cold_start_s, t + cold_start_s, t + cold_start_s))
        for instance in live:
            idle = instance.ready <= t and instance.busy_until <= t and not queue
            if idle and t - instance.last_done >= idle_tail_s:
                instance.end = t
        live = [i for i in day.instances if i.end is None]
        counts = (len(live), sum(1 for i in live if i.ready <= t))
        if counts != last_counts:
            day.samples.append(InstanceSample(at=at(t), desired=counts[0], current=counts[1]))
            last_counts = counts
        t += 1
    day.end_s = t
    return day
