"""A task token answered before moto's Step Functions engine starts waiting for it is kept.

On AWS, a `waitForTaskToken` task completes when its token is answered, whenever that is: the
Lambda it invokes may answer it itself (SubmitChunk does, when the budget refuses the chunk or
nothing is left to make) and a fast endpoint may answer it before that Lambda has returned. In
moto 5.2.5, a task with `HeartbeatSeconds` builds its heartbeat listener only after the Lambda
returns, and `_wait_for_task_token_heartbeat` then waits for a heartbeat before it looks at
the outcome: an answer that arrived earlier waits out the whole HeartbeatSeconds (an hour for
SubmitChunk) and then fails as a heartbeat timeout. This patch looks at the outcome first.

A new module rather than a function in moto_workarounds.py while that module moves (see
docs/layout.md); tests/unit/test_moto_callbacks.py shows the moto behaviour and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def answers_before_the_wait_are_kept() -> Iterator[None]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as module,
    )

    owner: Any = module.StateTaskServiceCallback
    original = owner._wait_for_task_token_heartbeat

    def wait(self: Any, env: Any, callback_endpoint: Any, heartbeat_endpoint: Any) -> Any:
        outcome = callback_endpoint.get_outcome()
        if outcome is not None:
            return outcome
        return original(self, env, callback_endpoint, heartbeat_endpoint)

    owner._wait_for_task_token_heartbeat = wait
    try:
        yield
    finally:
        owner._wait_for_task_token_heartbeat = original


@contextmanager
def each_attempt_gets_its_own_token() -> Iterator[None]:
    """Placeholder: replaced by the fix in the next commit."""
    yield
