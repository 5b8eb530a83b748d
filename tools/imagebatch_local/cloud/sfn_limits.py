"""Step Functions quotas a local run must respect, checked from the execution history.

AWS: "Maximum input or output size for a task, state, or execution: 256 KiB of data as a
UTF-8 encoded string", and 25,000 events in one execution's history (Step Functions
quotas, "Quotas related to state machine executions" and "... to task executions"). moto
checks some outputs and no input (docs/local-aws.md); this checks every payload the history
records - the execution's input and output, each state's input and output, each task's
parameters and result - for the parent execution and for the child executions of each
Distributed Map run, and the Map's collected result (one output per child), which AWS
returns as the state's result unless a ResultWriter exports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PAYLOAD_LIMIT_BYTES = 256 * 1024
HISTORY_EVENT_LIMIT = 25_000
# The payload-carrying fields of history event details.
_PAYLOAD_FIELDS = ("input", "output", "parameters")


@dataclass(frozen=True)
class LimitViolation:
    execution: str
    where: str
    size: int
    limit: int

    def describe(self) -> str:
        unit = "events" if self.where == "history" else "bytes"
        return (
            f"Step Functions limit crossed in {self.execution}: {self.where} is "
            f"{self.size:,} {unit} (limit {self.limit:,})"
        )


def utf8_size(payload: str) -> int:
    return len(payload.encode("utf-8"))


def _payloads(event: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key, details in event.items():
        if not key.endswith("EventDetails") or not isinstance(details, Mapping):
            continue
        name = details.get("name")
        for field in _PAYLOAD_FIELDS:
            value = details.get(field)
            if isinstance(value, str):
                state = f"state {name!r} " if name else ""
                yield f"{event.get('type', '?')} {state}{field}", value


def history_violations(
    execution: str, events: Iterable[Mapping[str, Any]], *, count_events: bool = True
) -> list[LimitViolation]:
    violations = []
    count = 0
    for event in events:
        count += 1
        for where, payload in _payloads(event):
            size = utf8_size(payload)
            if size > PAYLOAD_LIMIT_BYTES:
                violations.append(LimitViolation(execution, where, size, PAYLOAD_LIMIT_BYTES))
    if count_events and count > HISTORY_EVENT_LIMIT:
        violations.append(LimitViolation(execution, "history", count, HISTORY_EVENT_LIMIT))
    return violations


def collected_result_size(outputs: list[Any]) -> int:
    """The Distributed Map's result as Step Functions hands it on: a JSON array of the child
    executions' outputs (compact JSON, as the history records payloads)."""
    return utf8_size(json.dumps(outputs, separators=(",", ":"), ensure_ascii=False))


def map_run_violations(
    map_run: str, child_events: Sequence[Mapping[str, Any]], result: list[Any] | None
) -> list[LimitViolation]:
    """Each child is its own execution with its own history; moto keeps them interleaved in
    one list, so the 25,000-event limit is not checked per child here."""
    violations = history_violations(
        f"{map_run} (child executions)", child_events, count_events=False
    )
    if result is not None:
        size = collected_result_size(result)
        if size > PAYLOAD_LIMIT_BYTES:
            violations.append(
                LimitViolation(map_run, "the Map's collected result", size, PAYLOAD_LIMIT_BYTES)
            )
    return violations
