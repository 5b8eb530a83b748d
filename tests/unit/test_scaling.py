"""Cold-start and idle instance time: the cooldown computation and the attribution rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cfnlint.decode import decode

from imagebatch.costs.overhead import (
    UNATTRIBUTED,
    InferenceSpan,
    ScaleEvent,
    attribute_overhead,
    scale_in_cooldown_s,
)
from imagebatch.costs.prices import InstancePrice

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
# 1 micro-dollar per second keeps the arithmetic readable.
PRICE = InstancePrice(
    instance_type="ml.test",
    accelerator="none",
    usd_per_hour=Decimal("0.0036"),
    source="test",
    retrieved=T0.date(),
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_cooldown_is_the_cold_start_rounded_up_to_a_minute() -> None:
    assert scale_in_cooldown_s(545) == 600
    assert scale_in_cooldown_s(600) == 600
    assert scale_in_cooldown_s(1) == 60
    with pytest.raises(ValueError):
        scale_in_cooldown_s(0)


def test_template_default_cooldown_matches_the_documented_cold_start() -> None:
    # An inf2.xlarge cold start (instance, image pull, Neuron model load) is taken as ~10 min.
    template, _ = decode(str(TEMPLATE_PATH))
    assert template is not None
    default = int(template["Parameters"]["SageMakerScaleInCooldown"]["Default"])
    assert default == scale_in_cooldown_s(9 * 60 + 30)


def test_cold_start_goes_to_waiting_batches_and_idle_to_served_time() -> None:
    # GIVEN a session: scale-out at 0, ready at 100; batch A waited (2 chunks), batch B
    # arrived after the instance was up; scale-in at 1,000
    events = [
        ScaleEvent(kind="scale_out", at=at(0), ready_at=at(100), instances_after=1),
        ScaleEvent(kind="scale_in", at=at(1000), instances_after=0),
    ]
    spans = [
        InferenceSpan(batch_id="A", submitted_at=at(-5), started_at=at(100), seconds=100),
        InferenceSpan(batch_id="A", submitted_at=at(-5), started_at=at(200), seconds=100),
        InferenceSpan(batch_id="B", submitted_at=at(300), started_at=at(300), seconds=200),
    ]
    # WHEN attributed
    charges = attribute_overhead(events, spans, PRICE, until=at(2000))
    # THEN A pays the 100 s cold start, and the 500 s idle splits 200:200 by inference time
    assert charges == {"A": 100 + 250, "B": 250}
    # AND inference (400 s, billed per image) + overhead == the session's 1,000 s
    assert sum(charges.values()) + 400 == 1000


def test_a_session_that_served_nothing_is_unattributed() -> None:
    events = [ScaleEvent(kind="scale_out", at=at(0), ready_at=at(60), instances_after=1)]
    charges = attribute_overhead(events, [], PRICE, until=at(660))
    assert charges == {UNATTRIBUTED: 660}


def test_shares_add_up_exactly_when_they_do_not_divide() -> None:
    events = [
        ScaleEvent(kind="scale_out", at=at(0), ready_at=at(10), instances_after=1),
        ScaleEvent(kind="scale_in", at=at(10), instances_after=0),
    ]
    spans = [
        InferenceSpan(batch_id=name, submitted_at=at(0), started_at=at(5), seconds=0)
        for name in ("A", "B", "C")
    ]
    charges = attribute_overhead(events, spans, PRICE, until=at(10))
    assert sum(charges.values()) == 10
    assert sorted(charges.values()) == [3, 3, 4]
