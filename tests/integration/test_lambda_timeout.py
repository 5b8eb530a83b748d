"""The local Lambda runtime stops trusting an invocation that ran past its Timeout, as Lambda
would have stopped it: its caller gets Lambda's timeout error, not the late result."""

from __future__ import annotations

import json
import time
from pathlib import Path

from imagebatch_local.cloud.lambda_runtime import (
    TIMED_OUT,
    FunctionSpec,
    InProcessLambdaRuntime,
)


def _function(tmp_path: Path, sleep_s: float, timeout_s: int) -> FunctionSpec:
    code = tmp_path / "fn"
    code.mkdir()
    (code / "app.py").write_text(
        "import time\n"
        "def handler(event, context):\n"
        f"    time.sleep({sleep_s})\n"
        "    return {'ok': True, 'left_ms': context.get_remaining_time_in_millis()}\n"
    )
    return FunctionSpec(
        logical_id="SlowFunction",
        name="slow",
        arn="arn:aws:lambda:us-west-2:123456789012:function:slow",
        code_dir=code,
        handler="app.handler",
        memory_mb=128,
        timeout_s=timeout_s,
        environment={},
    )


def test_an_invocation_past_its_timeout_fails_as_lambda_fails_it(tmp_path: Path) -> None:
    runtime = InProcessLambdaRuntime([_function(tmp_path, sleep_s=1.2, timeout_s=1)])
    payload, errored = runtime.invoke("slow", {})
    assert errored
    assert json.loads(payload) == {
        "errorType": TIMED_OUT,
        "errorMessage": "Task timed out after 1.00 seconds",
    }
    (invocation,) = runtime.invocations
    assert invocation.errored and invocation.error_type == TIMED_OUT


def test_an_invocation_within_its_timeout_returns_its_result(tmp_path: Path) -> None:
    runtime = InProcessLambdaRuntime([_function(tmp_path, sleep_s=0.0, timeout_s=30)])
    started = time.monotonic()
    payload, errored = runtime.invoke("slow", {})
    assert not errored
    result = json.loads(payload)
    assert result["ok"] is True
    # the context counts down from the function's Timeout
    assert 0 < result["left_ms"] <= 30_000 - int((time.monotonic() - started) * 1000) + 50
