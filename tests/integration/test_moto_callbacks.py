"""moto's waitForTaskToken with a heartbeat, answered before the engine waits, and retried
(see tools/imagebatch_local/cloud/moto_callbacks.py)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from imagebatch_local.cloud import moto_workarounds
from imagebatch_local.cloud.moto_callbacks import (
    answers_before_the_wait_are_kept,
    each_attempt_gets_its_own_token,
)
from moto.server import ThreadedMotoServer
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


# A retried waitForTaskToken task, run by moto's engine through a moto server: SQS carries
# each attempt's token to the test, which plays the worker that answers it.
_RETRIED_CALLBACK = {
    "StartAt": "Wait",
    "States": {
        "Wait": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {
                "QueueUrl": "QUEUE_URL",
                "MessageBody": {"token.$": "$$.Task.Token", "attempt.$": "$$.State.RetryCount"},
            },
            "HeartbeatSeconds": 60,
            "Retry": [{"ErrorEquals": ["Worker.Failed"], "IntervalSeconds": 1, "MaxAttempts": 1}],
            "End": True,
        }
    },
}


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("MOTO_PORT", str(port))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    moto_workarounds.reset_moto(endpoint)
    moto_workarounds.enable_state_machine_execution(endpoint)
    try:
        yield endpoint
    finally:
        moto_workarounds.restore_all()
        server.stop()


def _next_message(sqs: Any, queue_url: str) -> dict[str, Any]:
    for _ in range(60):
        messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
        if messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
            return dict(json.loads(messages[0]["Body"]))
    raise AssertionError("no message from the task")


def _finished(sfn: Any, execution_arn: str) -> dict[str, Any]:
    for _ in range(600):
        execution = sfn.describe_execution(executionArn=execution_arn)
        if execution["status"] != "RUNNING":
            return dict(execution)
        time.sleep(0.05)
    raise AssertionError("the execution did not finish")


def test_a_retried_callback_task_waits_for_its_own_answer(moto_server: str) -> None:
    # GIVEN a waitForTaskToken task whose first attempt the worker fails (a retried error)
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    sfn = boto3.client("stepfunctions", endpoint_url=moto_server, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="tasks")["QueueUrl"]
    definition = json.dumps(_RETRIED_CALLBACK).replace("QUEUE_URL", queue_url)
    machine = sfn.create_state_machine(
        name="retried", definition=definition, roleArn="arn:aws:iam::123456789012:role/r"
    )["stateMachineArn"]
    with each_attempt_gets_its_own_token(), answers_before_the_wait_are_kept():
        execution = sfn.start_execution(stateMachineArn=machine)["executionArn"]
        first = _next_message(sqs, queue_url)
        sfn.send_task_failure(taskToken=first["token"], error="Worker.Failed", cause="attempt 1")
        # WHEN the retry is sent and its own answer is a success
        second = _next_message(sqs, queue_url)
        with contextlib.suppress(ClientError):  # moto as shipped: the retry already failed
            sfn.send_task_success(taskToken=second["token"], output='{"made": 2}')
        done = _finished(sfn, execution)
    # THEN the retry was not completed by the first attempt's answer: it had a token of its
    # own, as each attempt's task does on AWS, and the execution ends with its answer
    assert second["attempt"] == 1
    assert second["token"] != first["token"]
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == {"made": 2}
