"""RecordChunkFailure, the state every chunk's Catch goes to, run by the local Step Functions.

The state is taken from statemachine/batch.asl.json as it is, and run in moto's engine after a
Pass state that hands it what a Catch with ResultPath "$.error" hands it on AWS. An error
output need not carry a Cause (a States.Timeout or States.HeartbeatTimeout may have none):
the state must record the chunk anyway, or the Map fails and the batch with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from imagebatch_local.cloud import moto_workarounds
from moto.server import ThreadedMotoServer

from imagebatch.models.records import FailureClass
from imagebatch.pipeline.finalize import _class_from_chunk_error

REGION = "us-east-1"
ASL_PATH = Path(__file__).resolve().parents[2] / "statemachine" / "batch.asl.json"
TABLE = "ledger"


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("MOTO_PORT", str(port))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    moto_workarounds.reset_moto(url)
    moto_workarounds.enable_state_machine_execution(url)
    try:
        yield url
    finally:
        server.stop()


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)  # type: ignore[call-overload]


def _record_chunk_failure_state() -> dict[str, Any]:
    definition = json.loads(ASL_PATH.read_text(encoding="utf-8"))
    processor = definition["States"]["GenerateChunks"]["ItemProcessor"]["States"]
    state: dict[str, Any] = json.loads(
        json.dumps(processor["RecordChunkFailure"]).replace("${LedgerTableName}", TABLE)
    )
    return state


def _run(endpoint: str, error: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run RecordChunkFailure on a chunk item whose Catch put `error` at $.error."""
    ddb = _client("dynamodb", endpoint)
    ddb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    caught = {
        "batch_id": "b1",
        "bucket": "data",
        "backend": "bedrock",
        "chunk_concurrency": 2,
        "chunk": {"chunk_id": "00007", "key": "chunks/b1/00007.json", "images": 3},
        "error": error,
    }
    definition = {
        "StartAt": "Caught",
        "States": {
            "Caught": {"Type": "Pass", "Result": caught, "Next": "RecordChunkFailure"},
            "RecordChunkFailure": _record_chunk_failure_state(),
        },
    }
    iam = _client("iam", endpoint)
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    sfn = _client("stepfunctions", endpoint)
    arn = sfn.create_state_machine(name="sm", definition=json.dumps(definition), roleArn=role)[
        "stateMachineArn"
    ]
    execution = sfn.start_execution(stateMachineArn=arn, name="run-1", input="{}")["executionArn"]
    deadline = time.monotonic() + 20
    described = sfn.describe_execution(executionArn=execution)
    while described["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
        described = sfn.describe_execution(executionArn=execution)
    item = ddb.get_item(
        TableName=TABLE, Key={"pk": {"S": "BATCH#b1"}, "sk": {"S": "CHUNK#00007"}}
    ).get("Item")
    return described, item


def _marker(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value["S"] for key, value in item.items() if "S" in value}


def test_an_error_without_a_cause_is_recorded_and_the_chunk_ends(endpoint: str) -> None:
    # GIVEN a chunk whose task timed out: the error output has an Error and no Cause
    described, item = _run(endpoint, {"Error": "States.Timeout"})

    # THEN the state succeeded (the Map goes on) and the chunk is recorded as failed
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert item is not None
    marker = _marker(item)
    assert marker["status"] == "FAILED"
    assert marker["error"] == "States.Timeout"
    assert marker["chunk_key"] == "chunks/b1/00007.json"
    # AND finalize classes its images as timed out
    assert _class_from_chunk_error(marker, "x-1")[0] is FailureClass.TIMEOUT


def test_a_cause_is_kept_for_finalize(endpoint: str) -> None:
    # GIVEN a chunk whose retries ran out with images still unfinished (a Lambda error, whose
    # Cause is the function's error JSON)
    cause = json.dumps(
        {
            "errorType": "ChunkUnfinished",
            "errorMessage": json.dumps({"unfinished": {"x-1": "content_filtered"}}),
        }
    )
    described, item = _run(endpoint, {"Error": "ChunkUnfinished", "Cause": cause})

    # THEN the cause is recorded and finalize reads each image's class from it
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert item is not None
    failure_class, _ = _class_from_chunk_error(_marker(item), "x-1")
    assert failure_class is FailureClass.CONTENT_FILTERED
