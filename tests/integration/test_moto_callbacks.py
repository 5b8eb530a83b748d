"""moto's waitForTaskToken with a heartbeat, answered before the engine waits (see
tools/imagebatch_local/cloud/moto_callbacks.py)."""

from __future__ import annotations

import time
from typing import Any

from imagebatch_local.cloud.moto_callbacks import answers_before_the_wait_are_kept
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (  # noqa: E501
    StateTaskServiceCallback,
)
from moto.stepfunctions.parser.asl.eval.callback.callback import (
    CallbackEndpoint,
    CallbackOutcomeSuccess,
    HeartbeatTimedOut,
)


class _Running:
    def is_running(self) -> bool:
        return True


def _answered_then_waited(heartbeat_seconds: int) -> tuple[Any, float]:
    # the token is answered while the task's Lambda runs ...
    endpoint = CallbackEndpoint("token-1")
    endpoint.notify(CallbackOutcomeSuccess(callback_id="token-1", output='{"ok": true}'))
    # ... and the engine sets up its heartbeat listener and waits only afterwards
    heartbeat = endpoint.setup_heartbeat_endpoint(heartbeat_seconds=heartbeat_seconds)
    started = time.monotonic()
    wait: Any = StateTaskServiceCallback._wait_for_task_token_heartbeat
    outcome = wait(None, _Running(), endpoint, heartbeat)
    return outcome, time.monotonic() - started


def test_moto_loses_an_answer_given_before_it_waits() -> None:
    # moto as shipped: the early answer is not seen; the wait runs out as a heartbeat timeout
    outcome, waited = _answered_then_waited(heartbeat_seconds=1)
    assert isinstance(outcome, HeartbeatTimedOut)
    assert waited >= 1


def test_with_the_patch_an_early_answer_completes_the_task_at_once() -> None:
    with answers_before_the_wait_are_kept():
        outcome, waited = _answered_then_waited(heartbeat_seconds=30)
    assert isinstance(outcome, CallbackOutcomeSuccess)
    assert waited < 1
    # and the patch is gone afterwards
    outcome, _ = _answered_then_waited(heartbeat_seconds=1)
    assert isinstance(outcome, HeartbeatTimedOut)
