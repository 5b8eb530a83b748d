"""An S3 notification invokes its function asynchronously, and Lambda retries an
asynchronous invocation that fails twice (Lambda Developer Guide, "Asynchronous invocation":
"If the function returns an error, Lambda attempts to run it two more times"). The local
runtime does the same, so a manifest whose ingest was killed at its timeout still starts
its batch; the chaos e2e found one that never did."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from imagebatch_local.cloud.lambda_runtime import FunctionSpec, InProcessLambdaRuntime

S3_EVENT = {"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": "manifests/a.jsonl"}}}]}


def _function(tmp_path: Path, failures: int) -> FunctionSpec:
    """A function that fails its first `failures` invocations (counted in a file)."""
    code = tmp_path / "fn"
    code.mkdir()
    count = tmp_path / "count"
    (code / "app.py").write_text(
        "from pathlib import Path\n"
        f"COUNT = Path({str(count)!r})\n"
        "def handler(event, context):\n"
        "    n = int(COUNT.read_text()) if COUNT.exists() else 0\n"
        "    COUNT.write_text(str(n + 1))\n"
        f"    if n < {failures}:\n"
        "        raise RuntimeError(f'attempt {n + 1} failed')\n"
        "    return {'attempt': n + 1}\n"
    )
    return FunctionSpec(
        logical_id="IngestFunction",
        name="ingest",
        arn="arn:aws:lambda:us-west-2:123456789012:function:ingest",
        code_dir=code,
        handler="app.handler",
        memory_mb=128,
        timeout_s=30,
        environment={},
    )


def test_an_s3_event_whose_invocation_fails_is_delivered_again(tmp_path: Path) -> None:
    runtime = InProcessLambdaRuntime([_function(tmp_path, failures=1)])
    payload, errored = runtime.invoke("ingest", S3_EVENT)
    assert not errored and payload == '{"attempt": 2}'
    assert [i.errored for i in runtime.invocations] == [True, False]
    assert runtime.async_failures == []


def test_an_s3_event_is_given_up_after_two_retries(tmp_path: Path) -> None:
    runtime = InProcessLambdaRuntime([_function(tmp_path, failures=5)])
    _, errored = runtime.invoke("ingest", S3_EVENT)
    assert errored
    assert len(runtime.invocations) == 3
    (failure,) = runtime.async_failures
    assert failure.error_message == "attempt 3 failed"


def test_a_synchronous_invocation_is_not_retried(tmp_path: Path) -> None:
    runtime = InProcessLambdaRuntime([_function(tmp_path, failures=1)])
    _, errored = runtime.invoke("ingest", {"batch_id": "b"})
    assert errored and len(runtime.invocations) == 1


def test_an_eventbridge_event_whose_invocation_fails_is_delivered_again(tmp_path: Path) -> None:
    # EventBridge invokes its targets asynchronously too: the endpoint observer's state-change
    # rule. The chaos e2e found an observer killed at its timeout stopping the local endpoint.
    runtime = InProcessLambdaRuntime([_function(tmp_path, failures=1)])
    event = {"source": "aws.sagemaker", "detail-type": "SageMaker Endpoint State Change"}
    payload, errored = runtime.invoke("ingest", event | {"detail": {}})
    assert not errored and payload == '{"attempt": 2}'


def test_a_failure_given_up_is_its_own_functions_even_when_another_finished_meanwhile(
    tmp_path: Path,
) -> None:
    # Another function finishing between the last attempt and the failure's bookkeeping (here,
    # deterministically, while the on-failure record is sent) must not take the failure's
    # place: the session reports an ingest that failed for good by its function's name.
    failing = replace(_function(tmp_path, failures=5), on_failure="arn:aws:sqs:::failed")
    other_code = tmp_path / "other"
    other_code.mkdir()
    (other_code / "app.py").write_text("def handler(event, context):\n    return {}\n")
    other = replace(failing, logical_id="ContactSheetFunction", name="sheet", code_dir=other_code)
    runtime = InProcessLambdaRuntime([failing, other])
    runtime.send_to_destination = lambda *_: runtime.invoke("sheet", {"batch_id": "b"}) and None
    _, errored = runtime.invoke("ingest", S3_EVENT)
    assert errored
    (failure,) = runtime.async_failures
    assert (failure.function, failure.error_message) == ("ingest", "attempt 3 failed")
