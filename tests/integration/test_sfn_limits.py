"""The Step Functions payload and history limits the local run checks (sfn_limits.py)."""

from __future__ import annotations

import json
from typing import Any

from imagebatch_local.cloud.sfn_limits import (
    HISTORY_EVENT_LIMIT,
    PAYLOAD_LIMIT_BYTES,
    collected_result_size,
    history_violations,
    map_run_violations,
)


def _entered(name: str, payload: str) -> dict[str, Any]:
    return {
        "type": "TaskStateEntered",
        "stateEnteredEventDetails": {"name": name, "input": payload},
    }


def test_a_payload_over_256_kib_in_utf8_is_a_violation_and_at_the_limit_is_not() -> None:
    at_limit = "x" * PAYLOAD_LIMIT_BYTES
    # 'é' is two bytes in UTF-8: the limit counts bytes, not characters.
    over = "é" * (PAYLOAD_LIMIT_BYTES // 2 + 1)
    events = [
        {"type": "ExecutionStarted", "executionStartedEventDetails": {"input": at_limit}},
        _entered("FinalizeBatch", over),
        {
            "type": "TaskSucceeded",
            "taskSucceededEventDetails": {"resource": "invoke", "output": over},
        },
    ]
    violations = history_violations("exec", events)
    assert [(v.where, v.size) for v in violations] == [
        ("TaskStateEntered state 'FinalizeBatch' input", PAYLOAD_LIMIT_BYTES + 2),
        ("TaskSucceeded output", PAYLOAD_LIMIT_BYTES + 2),
    ]
    assert "exec: TaskStateEntered state 'FinalizeBatch' input is 262,146 bytes" in (
        violations[0].describe()
    )


def test_a_history_over_25000_events_is_a_violation() -> None:
    events = [{"type": "PassStateEntered"}] * (HISTORY_EVENT_LIMIT + 1)
    assert [v.where for v in history_violations("exec", events)] == ["history"]
    assert history_violations("exec", events[:HISTORY_EVENT_LIMIT]) == []


def test_the_maps_collected_result_counts_though_each_child_fits() -> None:
    # Three children of 100 KB each: none over the limit, their array is.
    child = {"blob": "x" * 100_000}
    violations = map_run_violations("maprun", [], [child, child, child])
    assert [v.where for v in violations] == ["the Map's collected result"]
    assert violations[0].size == len(json.dumps([child] * 3, separators=(",", ":")))
    assert map_run_violations("maprun", [], [child, child]) == []
    assert map_run_violations("maprun", [], None) == []


def test_the_collected_result_is_compact_json() -> None:
    assert collected_result_size([{}, {}]) == len("[{},{}]")
    assert collected_result_size([]) == 2
