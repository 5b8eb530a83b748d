"""Step Functions state transitions, counted from the state machine definition.

Standard workflows are billed per state entered, so what a batch costs to orchestrate
depends on the paths through statemachine/batch.asl.json; the metering (usage.py) charges
the counts kept here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class PathTransitions(BaseModel):
    """State transitions a Standard workflow is billed for, by path through the definition.

    batch: the top-level states one execution enters (Map state, finalize);
    chunk_attempt: states a chunk's child execution enters when its task succeeds (each
    retry of that task is one more transition); chunk_failure: extra states on the Catch path.
    """

    model_config = ConfigDict(frozen=True)
    batch: int
    chunk_attempt: int
    chunk_failure: int


def _walk(states: Mapping[str, Any], start: str) -> list[str]:
    """States entered from `start` following Next (Choice: Default) until an End."""
    path, name = [], start
    while name:
        if name in path:
            raise ValueError(f"loop at state {name}")
        path.append(name)
        state = states[name]
        if state.get("End") or state["Type"] in {"Succeed", "Fail"}:
            break
        name = state.get("Next") or state.get("Default") or ""
    return path


def path_transitions(definition: Mapping[str, Any], task_state: str) -> PathTransitions:
    """Count transitions on the success and Catch paths of the Map's chunk task."""
    top = _walk(definition["States"], definition["StartAt"])
    maps = [definition["States"][n] for n in top if definition["States"][n]["Type"] == "Map"]
    if len(maps) != 1:
        raise ValueError("expected exactly one Map state on the batch path")
    processor = maps[0]["ItemProcessor"]
    success = _walk(processor["States"], processor["StartAt"])
    catch_next = processor["States"][task_state]["Catch"][0]["Next"]
    failure = _walk(processor["States"], catch_next)
    return PathTransitions(batch=len(top), chunk_attempt=len(success), chunk_failure=len(failure))


def load_definition(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


# What statemachine/batch.asl.json is billed per path (batch: Map, finalize, contact sheet;
# chunk: the backend Choice and its task); tests derive it from the file and
# check it against an execution's history, so a change to the definition must change this.
BATCH_TRANSITIONS = PathTransitions(batch=3, chunk_attempt=2, chunk_failure=1)
# A contact sheet that goes on in another invocation is its task's retry: one transition.
CONTINUATION_TRANSITIONS = 1
