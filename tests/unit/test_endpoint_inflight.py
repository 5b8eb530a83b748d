"""Which endpoint requests finalize waits for (pipeline/endpoint_inflight.py), on listings
given here, and that FinalizeBatch's Retry waits as long as the longest of them may take."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagebatch.errors import EndpointResultsPending, StorageError
from imagebatch.models.records import ChunkFile, ImageJob
from imagebatch.pipeline.endpoint_inflight import (
    NOTIFICATION_GRACE,
    REQUEST_DEADLINE,
    requests_in_flight,
    wait_for_endpoint_results,
)
from imagebatch.pipeline.sagemaker_requests import HEARTBEAT

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
REQUEST = "00000-1-abcdef"


def _chunk() -> ChunkFile:
    job = ImageJob(
        image_id="e-1",
        item_id="e",
        index=1,
        line=2,
        prompt="p",
        width=64,
        height=64,
        seed=1,
        model="sd15",
    )
    return ChunkFile(
        batch_id="b", chunk_id="00000", backend="sagemaker", output_prefix="o/", images=[job]
    )


class _Store:
    def __init__(self, objects: dict[str, datetime]) -> None:
        self.objects = objects

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        yield from ((k, t) for k, t in sorted(self.objects.items()) if k.startswith(prefix))

    def get_chunk(self, key: str) -> ChunkFile:
        assert key == "chunks/b/00000.json"
        return _chunk()


class _Ledger:
    def __init__(self, recorded: set[str]) -> None:
        self.recorded = recorded

    def recorded_image_ids(self, batch_id: str, image_ids: list[str]) -> set[str]:
        return self.recorded & set(image_ids)


def _inflight(
    objects: dict[str, datetime], *, failed_at: datetime | None = None, recorded: bool = False
) -> list[str]:
    markers = {"00000": {"failed_at": failed_at.isoformat()}} if failed_at else {}
    ledger = _Ledger({"e-1"} if recorded else set())
    return requests_in_flight("b", _Store(objects), ledger, markers, NOW)


def test_a_request_without_an_outcome_is_waited_for_until_it_can_no_longer_run() -> None:
    key = f"async-inputs/b/{REQUEST}.json"
    assert _inflight({key: NOW - timedelta(minutes=5)}) == [REQUEST]
    assert _inflight({key: NOW - REQUEST_DEADLINE - timedelta(seconds=1)}) == []
    # AND not when its images are recorded (by another request, or its own result)
    assert _inflight({key: NOW - timedelta(minutes=5)}, recorded=True) == []


def test_an_outcome_is_waited_for_only_while_its_notification_may_still_be_recorded() -> None:
    request = {
        f"async-inputs/b/{REQUEST}.json": NOW - timedelta(minutes=30),
        f"async-inputs/b/{REQUEST}.submitted.json": NOW - timedelta(minutes=30),
    }
    written = NOW - timedelta(minutes=1)
    outcome = {f"async-outputs/{REQUEST}.out": written}
    # the result came after the chunk's failure was recorded: its notification is on its way
    assert _inflight(request | outcome, failed_at=written - timedelta(minutes=1)) == [REQUEST]
    assert _inflight(request | outcome) == [REQUEST]
    # recorded (and the token failed) before the chunk failed for good: nothing to wait for
    assert _inflight(request | outcome, failed_at=written + timedelta(seconds=5)) == []
    # a failure object counts as an outcome too, and past the redeliveries nothing comes
    failure = {f"async-failures/{REQUEST}-error.out": NOW - NOTIFICATION_GRACE}
    assert _inflight(request | failure) == []


def test_finalize_is_told_to_wait_by_the_error_its_retry_matches() -> None:
    store = _Store({f"async-inputs/b/{REQUEST}.json": NOW})
    with pytest.raises(EndpointResultsPending):
        wait_for_endpoint_results("b", store, _Ledger(set()), {}, now=lambda: NOW)
    asl = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
    (retry,) = [
        r
        for r in asl["States"]["FinalizeBatch"]["Retry"]
        if EndpointResultsPending.__name__ in r["ErrorEquals"]
    ]
    # AND its intervals (no jitter: FULL could shorten them) outlast the longest wait
    assert "JitterStrategy" not in retry
    waited, interval = 0.0, float(retry["IntervalSeconds"])
    for _ in range(retry["MaxAttempts"]):
        waited += min(interval, retry["MaxDelaySeconds"])
        interval *= retry["BackoffRate"]
    assert waited > (REQUEST_DEADLINE + NOTIFICATION_GRACE).total_seconds()


class _Outage(_Store):
    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        raise StorageError("ListObjectsV2: SlowDown", transient=True)


def test_an_s3_blip_while_listing_is_a_wait_not_a_failure() -> None:
    with pytest.raises(EndpointResultsPending):
        wait_for_endpoint_results("b", _Outage({}), _Ledger(set()), {}, now=lambda: NOW)


def test_submit_treats_a_request_as_given_up_when_the_state_machine_does() -> None:
    asl = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
    submit = asl["States"]["GenerateChunks"]["ItemProcessor"]["States"]["SubmitChunk"]
    assert HEARTBEAT.total_seconds() == submit["HeartbeatSeconds"]
