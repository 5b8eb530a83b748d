"""Instance time: the idle tail, sessions from DescribeEndpoint samples, the attribution rule,
and conservation over simulated days (every billed micro-dollar charged exactly once)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from cfnlint.decode import decode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.endpoint_day import Submitted, at, simulate

from imagebatch.costs.estimate import load_speed_assumptions
from imagebatch.costs.overhead import (
    UNATTRIBUTED,
    EndpointRequest,
    InstanceSample,
    attribute_window,
    scale_in_cooldown_s,
    sessions_from_samples,
    windows,
)
from imagebatch.costs.prices import InstancePrice, load_aws_prices

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"

# 1 micro-dollar per second keeps the arithmetic readable.
PRICE = InstancePrice(
    instance_type="ml.test",
    accelerator="none",
    usd_per_hour=Decimal("0.0036"),
    source="test",
    retrieved=at(0).date(),
)
INF2 = load_aws_prices().region("us-east-1").instance("ml.inf2.xlarge")


def request(
    batch: str, received: float, done: float, seconds: float, rid: str = ""
) -> EndpointRequest:
    return EndpointRequest(
        batch_id=batch,
        request_id=rid or f"{batch}-{received}",
        received_at=at(received),
        completed_at=at(done),
        inference_seconds=Decimal(str(seconds)),
        inference_micro_usd=round(seconds),  # PRICE: 1 micro-dollar a second
    )


def only_window(samples: list[InstanceSample], until: float = 10_000) -> object:
    closed, still = sessions_from_samples(samples, at(until))
    (window,) = windows(closed, still)
    return window


def test_cooldown_is_the_cold_start_rounded_up_to_a_minute() -> None:
    assert scale_in_cooldown_s(545) == 600
    assert scale_in_cooldown_s(480) == 480
    assert scale_in_cooldown_s(1) == 60
    with pytest.raises(ValueError):
        scale_in_cooldown_s(0)


def test_sessions_bill_from_the_scale_out_and_serve_from_ready() -> None:
    # GIVEN DescribeEndpoint's counts: one desired at 0, current at 100, a second instance
    # desired at 300 that never became ready (cancelled at 350), scale-in at 1,000
    samples = [
        InstanceSample(at=at(0), desired=1, current=0),
        InstanceSample(at=at(100), desired=1, current=1),
        InstanceSample(at=at(300), desired=2, current=1),
        InstanceSample(at=at(350), desired=1, current=1),
        InstanceSample(at=at(1000), desired=0, current=0),
    ]
    closed, still = sessions_from_samples(samples, at(2000))
    # THEN the cancelled one is closed first, and every billed second is in a session
    assert still == []
    assert [(s.start, s.ready, s.end) for s in closed] == [
        (at(300), None, at(350)),
        (at(0), at(100), at(1000)),
    ]
    (window,) = windows(closed, still)
    assert window.closed and window.instance_seconds == 1050


def test_an_instance_still_up_makes_an_open_window() -> None:
    closed, still = sessions_from_samples([InstanceSample(at=at(0), desired=1, current=1)], at(600))
    (window,) = windows(closed, still)
    assert not window.closed and window.instance_seconds == 600


def test_cold_start_goes_to_waiting_batches_and_idle_to_served_time() -> None:
    # GIVEN a session: scale-out at 0, ready at 100; batch A waited (2 requests), batch B
    # arrived after the instance was up; scale-in at 1,000
    window = only_window(
        [
            InstanceSample(at=at(0), desired=1, current=0),
            InstanceSample(at=at(100), desired=1, current=1),
            InstanceSample(at=at(1000), desired=0, current=0),
        ]
    )
    requests = [
        request("A", -5, 200, 100),
        request("A", -5, 300, 100, "a2"),
        request("B", 300, 500, 200),
    ]
    # WHEN attributed
    charged = attribute_window(window, requests, PRICE)  # type: ignore[arg-type]
    # THEN A pays the 100 s cold start, and the 500 s idle splits 200:200 by inference time
    assert charged.by_batch() == {"A": 100 + 250, "B": 250}
    assert charged.inference_micro_usd == 400
    assert charged.billed_micro_usd == 1000


def test_a_window_that_served_nothing_is_unattributed() -> None:
    # the instance the endpoint is created with (InitialInstanceCount 1), never used
    window = only_window(
        [
            InstanceSample(at=at(0), desired=1, current=0),
            InstanceSample(at=at(60), desired=1, current=1),
            InstanceSample(at=at(960), desired=0, current=0),
        ]
    )
    charged = attribute_window(window, [], PRICE)  # type: ignore[arg-type]
    assert charged.by_batch() == {UNATTRIBUTED: 960}


def test_the_first_request_is_inference_not_idle() -> None:
    # GIVEN the local one-chunk case that double-counted: the request arrives before the
    # scale-out is recorded (received at -1), the instance is billed from 0, ready at 3,
    # the request runs 5 s and the instance scales in 10 s after it
    window = only_window(
        [
            InstanceSample(at=at(0), desired=1, current=0),
            InstanceSample(at=at(3), desired=1, current=1),
            InstanceSample(at=at(18), desired=0, current=0),
        ]
    )
    charged = attribute_window(window, [request("A", -1, 8, 5)], PRICE)  # type: ignore[arg-type]
    # THEN of the 18 billed seconds: 5 inference (charged per image), 3 cold start, 10 idle
    kinds = {line.kind: line.micro_usd for line in charged.lines}
    assert charged.inference_micro_usd == 5
    assert kinds == {"cold_start": 3, "idle": 10}
    assert UNATTRIBUTED not in charged.by_batch()


def test_shares_add_up_exactly_when_they_do_not_divide() -> None:
    window = only_window(
        [
            InstanceSample(at=at(0), desired=1, current=1),
            InstanceSample(at=at(10), desired=0, current=0),
        ]
    )
    requests = [request(name, 0, 5, 0) for name in ("A", "B", "C")]
    charged = attribute_window(window, requests, PRICE)  # type: ignore[arg-type]
    # all three served zero seconds: nothing to weigh the idle by, so unattributed
    assert charged.by_batch() == {UNATTRIBUTED: 10}
    requests = [request(name, 0, 5, 1) for name in ("A", "B", "C")]
    charged = attribute_window(window, requests, PRICE)  # type: ignore[arg-type]
    assert sorted(charged.by_batch().values()) == [2, 2, 3]
    assert sum(charged.by_batch().values()) + charged.inference_micro_usd == 10


def test_calls_measured_past_the_billed_time_are_shown_not_hidden() -> None:
    window = only_window(
        [
            InstanceSample(at=at(0), desired=1, current=1),
            InstanceSample(at=at(10), desired=0, current=0),
        ]
    )
    charged = attribute_window(window, [request("A", 0, 10, 12)], PRICE)  # type: ignore[arg-type]
    assert charged.by_batch() == {UNATTRIBUTED: -2}
    assert charged.inference_micro_usd + sum(charged.by_batch().values()) == 10


submissions = st.lists(
    st.builds(
        Submitted,
        batch_id=st.sampled_from(["b1", "b2", "b3", "b4"]),
        arrival_s=st.integers(0, 86_399),
        calls_s=st.lists(st.integers(1, 40), min_size=1, max_size=6).map(tuple),
        dies_after_s=st.none() | st.integers(1, 100),
        partial=st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


def attribute_day(
    submitted: list[Submitted], max_instances: int, cold: int, tail: int, deployed_with: int = 0
) -> None:
    day = simulate(
        submitted,
        INF2,
        cold_start_s=cold,
        idle_tail_s=tail,
        max_instances=max_instances,
        deployed_with=deployed_with,
    )
    closed, still = sessions_from_samples(day.samples, at(day.end_s))
    assert still == []
    attributed = [attribute_window(w, day.requests, INF2) for w in windows(closed, still)]
    # Every request falls in one window, so every inference charge is counted once ...
    assert sum(w.inference_micro_usd for w in attributed) == sum(
        r.inference_micro_usd for r in day.requests
    )
    # ... and attributed (inference + cold start + idle) + unattributed = instance-seconds
    # x price, to the micro-dollar, against the simulation's own instance timeline.
    truth = day.instance_seconds() * INF2.micro_usd_per_second
    assert truth == int(truth)  # whole seconds at $0.99/h: 275 micro-dollars a second
    total = sum(w.inference_micro_usd + sum(w.by_batch().values()) for w in attributed)
    assert total == int(truth)
    for window in attributed:
        served = {r.batch_id for r in day.requests if window.start <= r.completed_at <= window.end}
        cold = sum(round(s.cold_seconds * INF2.micro_usd_per_second) for s in window.sessions)
        kinds: dict[str, int] = {}
        for line in window.lines:
            # no batch pays for a window it had nothing in, and nothing is negative
            assert line.micro_usd > 0
            assert line.charged_to in served | {UNATTRIBUTED} or line.kind == "cold_start"
            kinds[line.kind] = kinds.get(line.kind, 0) + line.micro_usd
        # the cold starts are charged as cold start, and idle is exactly what was neither
        # inference nor cold start: no second is charged twice
        assert kinds.get("cold_start", 0) == cold
        assert kinds.get("idle", 0) == window.billed_micro_usd - window.inference_micro_usd - cold


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    submitted=submissions,
    max_instances=st.integers(1, 2),
    cold=st.integers(30, 600),
    tail=st.integers(60, 900),
    deployed_with=st.integers(0, 1),
)
def test_every_billed_micro_dollar_of_a_simulated_day_is_charged_once(
    submitted: list[Submitted], max_instances: int, cold: int, tail: int, deployed_with: int
) -> None:
    attribute_day(submitted, max_instances, cold, tail, deployed_with)


def test_a_day_with_overlapping_batches_retries_and_an_idle_gap() -> None:
    submitted = [
        Submitted("b1", 3_600, (30, 30, 30)),
        Submitted("b2", 3_610, (20, 20), dies_after_s=25, partial=True),
        Submitted("b1", 3_620, (30,), dies_after_s=10),
        Submitted("b3", 3_700, (10,)),
        # an idle gap of hours, then one more batch
        Submitted("b4", 50_000, (40, 40)),
    ]
    # (the day starts with the instance the deploy creates, which serves nothing)
    attribute_day(submitted, max_instances=2, cold=480, tail=480, deployed_with=1)


def test_the_template_and_the_estimate_describe_the_same_idle_tail() -> None:
    # GIVEN the template's scale-in setting and the figures the estimate prices with
    template, _ = decode(str(TEMPLATE_PATH))
    assert template is not None
    minutes = int(template["Parameters"]["SageMakerIdleTailMinutes"]["Default"])
    speeds = load_speed_assumptions()
    # THEN the tail the alarm waits is the tail the estimate charges, and it is the ski-rental
    # break-even for the cold start the estimate assumes
    assert minutes * 60 == speeds.sagemaker_idle_tail_seconds.seconds
    assert minutes * 60 == scale_in_cooldown_s(float(speeds.sagemaker_cold_start_seconds.seconds))


def test_unattributed_idle_is_shared_by_inference_seconds_with_the_remainder_to_the_largest() -> (
    None
):
    from imagebatch.costs.overhead import unattributed_shares

    # 1,001 µ$ over 60 s and 40 s: 600.6 and 400.4, floored to 600 and 400, the 1 left over
    # to the largest
    assert unattributed_shares(1_001, {"x": Decimal(60), "y": Decimal(40)}) == {
        "x": 601,
        "y": 400,
    }
    # nothing to share, or no one active: no shares
    assert unattributed_shares(0, {"x": Decimal(1)}) == {}
    assert unattributed_shares(-5, {"x": Decimal(1)}) == {}
    assert unattributed_shares(7, {}) == {}
    # active with no inference seconds: an equal split
    assert unattributed_shares(7, {"x": Decimal(0), "y": Decimal(0)}) == {"x": 4, "y": 3}
