"""Every Lambda task of the batch state machine retries what AWS documents as transient, and
a chunk's failure record is retried (issue 18): one blip must not fail a whole batch.

The lists: AWS's best practice for Lambda tasks ("Handle transient Lambda service
exceptions") names Lambda.ClientExecutionTimeoutException, Lambda.ServiceException,
Lambda.AWSLambdaException and Lambda.SdkClientException; Lambda.TooManyRequestsException is
a throttle; Sandbox.Timedout and Lambda.Unknown are an invocation killed at its timeout (the
best-practice page: "Unhandled errors in Lambda are reported as Lambda.Unknown ... These
include out-of-memory errors and function timeouts"; the use cases are written to be run
again: pending commits, conditional records). The chaos e2e found a finalize killed at its
timeout failing the whole batch for want of Lambda.Unknown here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
ASL_PATH = ROOT / "statemachine" / "batch.asl.json"
TEMPLATE_PATH = ROOT / "template.yaml"

TRANSIENT_LAMBDA_ERRORS = frozenset(
    {
        "Lambda.ClientExecutionTimeoutException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Sandbox.Timedout",
        "Lambda.Unknown",
    }
)


def _states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _states(processor["States"])
        for branch in state.get("Branches", []):
            yield from _states(branch["States"])


def _asl() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ASL_PATH.read_text())
    return document


def _lambda_tasks() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, state)
        for name, state in _states(_asl()["States"])
        if state["Type"] == "Task" and "lambda:invoke" in state["Resource"]
    ]


def _retried(state: dict[str, Any]) -> set[str]:
    return {error for retrier in state.get("Retry", []) for error in retrier["ErrorEquals"]}


@pytest.mark.parametrize("name", [name for name, _ in _lambda_tasks()])
def test_every_lambda_task_retries_the_documented_transient_errors(name: str) -> None:
    state = dict(_lambda_tasks())[name]
    missing = TRANSIENT_LAMBDA_ERRORS - _retried(state)
    assert not missing, f"{name} does not retry {sorted(missing)}"


def test_a_chunk_failure_record_is_retried() -> None:
    # A DynamoDB blip here fails the Map child and, with it, the whole batch; the Put is the
    # same item every time, so retrying it is safe.
    state = dict(_states(_asl()["States"]))["RecordChunkFailure"]
    retriers = state.get("Retry", [])
    assert retriers, "RecordChunkFailure has no Retry"
    assert any(
        "States.ALL" in r["ErrorEquals"] or "DynamoDB.SdkClientException" in r["ErrorEquals"]
        for r in retriers
    )
    assert max(r.get("MaxAttempts", 3) for r in retriers) >= 3


def test_the_state_machine_may_stop_its_map_children() -> None:
    # A Distributed Map that fails stops its running children (each a chunk, holding budget);
    # AWS's Distributed Map policy lists states:StopExecution on the machine's executions.
    decoded, _ = decode(str(TEMPLATE_PATH))
    assert isinstance(decoded, dict)
    role = decoded["Resources"]["BatchStateMachine"]["Properties"]["Policies"]
    text = json.dumps(role)
    statements = [
        s for policy in role if isinstance(policy, dict) for s in policy.get("Statement", [])
    ]
    stoppers = [
        json.dumps(s.get("Resource"))
        for s in statements
        if "states:StopExecution" in json.dumps(s.get("Action"))
    ]
    assert stoppers, f"no states:StopExecution in the state machine's policies: {text[:200]}"
    assert any("-batch/*:*" in r for r in stoppers), "the Map Run's children are not covered"


def test_a_finalize_that_fails_for_good_marks_the_batch_failed_and_fails_the_execution() -> None:
    # Without it the batch stays RUNNING for ever, and no one is told.
    states = dict(_states(_asl()["States"]))
    catches = states["FinalizeBatch"].get("Catch", [])
    assert catches and "States.ALL" in catches[0]["ErrorEquals"]
    settle = states[catches[0]["Next"]]
    assert settle["Type"] == "Task" and settle["Resource"].endswith("dynamodb:updateItem")
    assert "FAILED" in json.dumps(settle["Parameters"])
    assert "ConditionExpression" in settle["Parameters"], "a settled batch is not overwritten"
    assert states[settle["Next"]]["Type"] == "Fail", "the execution must fail (the alarm)"


def test_failed_executions_raise_an_alarm() -> None:
    decoded, _ = decode(str(TEMPLATE_PATH))
    assert isinstance(decoded, dict)
    alarms = [
        r["Properties"]
        for r in decoded["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("MetricName") == "ExecutionsFailed"
    ]
    assert alarms, "no alarm on the state machine's ExecutionsFailed"
    alarm = alarms[0]
    assert alarm["Namespace"] == "AWS/States"
    assert alarm["Dimensions"][0]["Name"] == "StateMachineArn"
    assert alarm["Dimensions"][0]["Value"] == {"Ref": "BatchStateMachine"}


def test_a_failed_chunk_does_not_end_the_map_while_other_chunks_run() -> None:
    # Each child records its own failure (RecordChunkFailure); a child that still fails would,
    # at the default 0% tolerance, fail the Map, whose Catch runs finalize while the other
    # chunks still run: their holds written off, their late commits refused, their images lost.
    # Finalize accounts for every chunk itself ("the chunk never reported back"), so the Map
    # tolerates every child's failure and finalize starts only once all of them have ended.
    the_map = _asl()["States"]["GenerateChunks"]
    assert the_map["Type"] == "Map"
    assert the_map.get("ToleratedFailurePercentage") == 100
