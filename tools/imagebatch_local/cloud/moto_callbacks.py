"""A task token answered before moto's Step Functions engine starts waiting for it is kept,
and each Retry attempt of a callback task has a token of its own.

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
    """A retried waitForTaskToken task waits for an answer to that attempt, not the last one.

    On AWS each attempt of a Task state is a task of its own (its own TaskScheduled event and
    token), so an answer given to attempt 1 cannot complete attempt 2. moto 5.2.5 mints the
    token once when the state is entered (`_eval_body`) and runs every Retry attempt on it:
    the retry finds the callback endpoint already answered (its outcome kept, its event set
    by `interrupt_all`) and ends at once with attempt 1's answer, while the retry's own answer
    arrives for a task that is gone. A SubmitChunk stopped by its budget hold then took three
    attempts instead of two. This mints a fresh token (and endpoint) for each retry attempt.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as module,
    )

    owner: Any = module.StateTaskServiceCallback
    # inherited from ExecutionState: the one call per attempt, inside the Retry loop
    original = owner._evaluate_with_timeout
    own = owner.__dict__.get("_evaluate_with_timeout")  # a patch already in place (nested)

    def evaluate(self: Any, env: Any) -> Any:
        context = env.states.context_object.context_object_data
        if "Task" in context and context["State"].get("RetryCount", 0) > 0:
            env.callback_pool_manager.add(env.states.context_object.update_task_token())
        return original(self, env)

    owner._evaluate_with_timeout = evaluate
    try:
        yield
    finally:
        if own is None:
            del owner._evaluate_with_timeout
        else:
            owner._evaluate_with_timeout = own
