"""Map and in-chunk concurrency derived from a model's images-per-minute quota."""

from __future__ import annotations

import pytest

from imagebatch.backends.concurrency import plan_concurrency, sustainable_in_flight
from imagebatch.models.bedrock_models import ModelQuota, load_catalogue


def quota(per_minute: int, seconds: float) -> ModelQuota:
    return ModelQuota(images_per_minute=per_minute, seconds_per_image=seconds, source="test")


@pytest.mark.parametrize(
    ("per_minute", "seconds", "headroom", "expected"),
    [
        (60, 8.0, 1.0, 8),  # one image per second, 8 s each: 8 calls in flight
        (60, 8.0, 0.8, 6),
        (600, 5.0, 0.8, 40),
        (2, 3.0, 0.8, 1),  # a tiny quota still gets one call in flight
    ],
)
def test_littles_law(per_minute: int, seconds: float, headroom: float, expected: int) -> None:
    assert sustainable_in_flight(quota(per_minute, seconds), headroom) == expected


def test_quota_splits_between_map_and_chunks_without_exceeding_it() -> None:
    plan = plan_concurrency(
        [quota(600, 5.0)], chunks=100, max_map_concurrency=10, max_chunk_concurrency=4
    )
    assert (plan.in_flight, plan.map_max_concurrency, plan.chunk_concurrency) == (40, 10, 4)
    plan = plan_concurrency(
        [quota(60, 8.0)], chunks=100, max_map_concurrency=10, max_chunk_concurrency=4
    )
    assert (plan.in_flight, plan.map_max_concurrency, plan.chunk_concurrency) == (6, 2, 3)


@pytest.mark.parametrize("per_minute", [1, 7, 60, 150, 1000, 10_000])
@pytest.mark.parametrize("chunks", [1, 3, 50])
def test_plan_never_exceeds_quota_or_ceilings(per_minute: int, chunks: int) -> None:
    plan = plan_concurrency(
        [quota(per_minute, 6.0)], chunks=chunks, max_map_concurrency=10, max_chunk_concurrency=4
    )
    assert 1 <= plan.map_max_concurrency <= min(10, chunks)
    assert 1 <= plan.chunk_concurrency <= 4
    assert plan.map_max_concurrency * plan.chunk_concurrency <= max(1, plan.in_flight)


def test_a_mixed_batch_is_planned_for_its_tightest_model() -> None:
    plan = plan_concurrency(
        [quota(600, 5.0), quota(60, 8.0)],
        chunks=20,
        max_map_concurrency=10,
        max_chunk_concurrency=4,
    )
    assert plan.in_flight == 6


def test_few_chunks_cap_the_map() -> None:
    plan = plan_concurrency(
        [quota(6000, 5.0)], chunks=2, max_map_concurrency=10, max_chunk_concurrency=4
    )
    assert (plan.map_max_concurrency, plan.chunk_concurrency) == (2, 4)


def test_catalogue_quotas_plan_a_default_deployment() -> None:
    for spec in load_catalogue().models:
        plan = plan_concurrency(
            [spec.throughput], chunks=20, max_map_concurrency=10, max_chunk_concurrency=4
        )
        assert plan.map_max_concurrency * plan.chunk_concurrency <= plan.in_flight


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunks": 0, "max_map_concurrency": 1, "max_chunk_concurrency": 1},
        {"chunks": 1, "max_map_concurrency": 1, "max_chunk_concurrency": 1, "headroom": 0},
    ],
)
def test_bad_inputs_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        plan_concurrency([quota(60, 1.0)], **kwargs)
