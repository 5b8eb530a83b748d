"""Submitting a chunk with its task token, and recording the notification that answers it.

S3 and DynamoDB are moto; SageMaker Runtime and Step Functions are botocore Stubbers, which
check every request against the real service models.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.aws.stepfunctions import TaskTokens
from imagebatch.costs.prices import InstancePrice
from imagebatch.models.records import ChunkFile, ChunkRef, ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
)
from imagebatch.pipeline.sagemaker_chunk import (
    INFERENCE_FAILED,
    SubmitTask,
    record_result,
    submit_chunk,
)

PRICE = InstancePrice(
    instance_type="ml.test",
    accelerator="none",
    usd_per_hour=Decimal("3.6"),
    source="test",
    retrieved=date(2026, 11, 1),
)
TOKEN = "token-" + "x" * 200


def jobs(n: int) -> list[ImageJob]:
    return [
        ImageJob(
            image_id=f"a-{i}",
            item_id="a",
            index=i,
            line=2,
            prompt="a mug",
            width=64,
            height=64,
            seed=i,
            model="sd15",
        )
        for i in range(1, n + 1)
    ]


@pytest.fixture
def setup(s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str) -> Any:
    store = BatchStore(s3_client, s3_bucket)
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch("b1", {"status": "RUNNING", "images_total": 3})
    ref = store.put_chunk(
        ChunkFile(
            batch_id="b1",
            chunk_id="00000",
            backend="sagemaker",
            output_prefix="outputs/",
            images=jobs(3),
        )
    )
    return store, ledger, ref


def _task(ref: ChunkRef, bucket: str, retry_count: int = 0) -> SubmitTask:
    return SubmitTask(
        batch_id="b1", bucket=bucket, chunk=ref, task_token=TOKEN, retry_count=retry_count
    )


def test_submit_writes_the_request_and_invokes_async(setup: Any, s3_bucket: str) -> None:
    store, ledger, ref = setup
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(runtime) as stub, Stubber(sfn):
        stub.add_response(
            "invoke_endpoint_async",
            {"InferenceId": "x", "OutputLocation": "s3://b/o.out"},
            {
                "EndpointName": "ep",
                "InputLocation": ANY,
                "ContentType": "application/json",
                "Accept": "application/json",
                "InferenceId": ANY,
                "RequestTTLSeconds": 600,
                "InvocationTimeoutSeconds": 900,
            },
        )
        receipt = submit_chunk(
            _task(ref, s3_bucket, retry_count=1),
            store=store,
            ledger=ledger,
            endpoint=AsyncEndpoint(runtime, "ep", request_ttl_s=600, invocation_timeout_s=900),
            tokens=TaskTokens(sfn),
        )
    assert receipt.images == 3
    assert receipt.input_location is not None
    key = receipt.input_location.split("/", 3)[3]
    body = store._s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    invocation = ChunkInvocation.model_validate_json(body)
    assert invocation.task_token == TOKEN
    assert invocation.attempt == 2
    assert [j.image_id for j in invocation.images] == ["a-1", "a-2", "a-3"]
    assert receipt.inference_id is not None
    assert len(receipt.inference_id) <= 64


def test_submit_with_everything_recorded_answers_the_token_itself(
    setup: Any, s3_bucket: str
) -> None:
    store, ledger, ref = setup
    _record_all(store, ledger, s3_bucket)  # a previous attempt recorded the images
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(runtime), Stubber(sfn) as stub:
        stub.add_response("send_task_success", {}, {"taskToken": TOKEN, "output": ANY})
        receipt = submit_chunk(
            _task(ref, s3_bucket),
            store=store,
            ledger=ledger,
            endpoint=AsyncEndpoint(runtime, "ep", request_ttl_s=600, invocation_timeout_s=900),
            tokens=TaskTokens(sfn),
        )
        stub.assert_no_pending_responses()
    assert receipt.images == 0
    assert receipt.skipped_already_done == 3


def _notification(bucket: str, status: str = "Completed") -> AsyncNotification:
    params: dict[str, str] = {"contentType": "application/json"}
    if status == "Completed":
        params["outputLocation"] = f"s3://{bucket}/async-outputs/x.out"
    else:
        params["failureLocation"] = f"s3://{bucket}/async-failures/x-error.out"
    return AsyncNotification.model_validate(
        {
            "invocationStatus": status,
            "inferenceId": "x",
            "failureReason": None if status == "Completed" else "ClientError: 500",
            "requestParameters": {
                "endpointName": "ep",
                "inputLocation": f"s3://{bucket}/async-inputs/b1/x.json",
            },
            "responseParameters": params,
        }
    )


def _put_io(store: BatchStore, bucket: str) -> None:
    invocation = ChunkInvocation(
        batch_id="b1",
        chunk_id="00000",
        bucket=bucket,
        output_prefix="outputs/",
        task_token=TOKEN,
        images=jobs(3),
    )
    store.put_json("async-inputs/b1/x.json", invocation.model_dump_json().encode())
    result = InvocationResult(
        batch_id="b1",
        chunk_id="00000",
        accelerator="cpu",
        max_batch=2,
        images=[
            ServedImage(image_id="a-1", status="SUCCEEDED", seed=1, key="k1", call=0),
            ServedImage(image_id="a-2", status="SUCCEEDED", seed=2, key="k2", call=0),
            ServedImage(image_id="a-3", status="SUCCEEDED", seed=3, key="k3", call=1),
        ],
        calls=[
            ServingCall(call=0, width=64, height=64, steps=1, images=2, seconds=0.5),
            ServingCall(call=1, width=64, height=64, steps=1, images=1, seconds=0.3),
        ],
    )
    store.put_json("async-outputs/x.out", result.model_dump_json().encode())


def _record_all(store: BatchStore, ledger: Ledger, bucket: str) -> None:
    _put_io(store, bucket)
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(sfn) as stub:
        stub.add_response("send_task_success", {}, {"taskToken": TOKEN, "output": ANY})
        record_result(
            _notification(bucket), store=store, ledger=ledger, tokens=TaskTokens(sfn), price=PRICE
        )


def test_success_records_costs_once_and_answers_the_token(setup: Any, s3_bucket: str) -> None:
    store, ledger, _ = setup
    _put_io(store, s3_bucket)
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(sfn) as stub:
        stub.add_response("send_task_success", {}, {"taskToken": TOKEN, "output": ANY})
        result = record_result(
            _notification(s3_bucket),
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            price=PRICE,
        )
        # a second delivery of the same notification charges nothing; its answer finds the
        # token already answered, which is not an error
        stub.add_client_error("send_task_success", "TaskDoesNotExist", "already answered")
        again = record_result(
            _notification(s3_bucket),
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            price=PRICE,
        )
        stub.assert_no_pending_responses()
    assert result is not None
    assert again is None
    # 0.5 s and 0.3 s at 1,000 u$/s
    assert result.cost_micro_usd == 800
    summary = ledger.get_batch("b1")
    assert summary is not None
    assert summary["cost_micro_usd"] == 800
    assert summary["images_succeeded"] == 3
    costs = {r["image_id"]: r["cost_micro_usd"] for r in ledger.image_records("b1")}
    assert costs == {"a-1": 250, "a-2": 250, "a-3": 300}


def test_error_notification_fails_the_task_for_a_retry(setup: Any, s3_bucket: str) -> None:
    store, ledger, _ = setup
    _put_io(store, s3_bucket)
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(sfn) as stub:
        stub.add_response(
            "send_task_failure",
            {},
            {"taskToken": TOKEN, "error": INFERENCE_FAILED, "cause": ANY},
        )
        record_result(
            _notification(s3_bucket, "Failed"),
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            price=PRICE,
        )
        stub.assert_no_pending_responses()
    assert list(ledger.image_records("b1")) == []


def test_a_token_that_no_longer_waits_is_not_an_error(setup: Any, s3_bucket: str) -> None:
    store, ledger, _ = setup
    _put_io(store, s3_bucket)
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(sfn) as stub:
        stub.add_client_error("send_task_success", "TaskTimedOut", "Task Timed Out")
        result = record_result(
            _notification(s3_bucket),
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            price=PRICE,
        )
    # the images stay recorded: a later attempt of the chunk skips them
    assert result is not None
    assert len(list(ledger.image_records("b1"))) == 3


def test_sns_envelope_is_unwrapped() -> None:
    from importlib import util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "functions" / "record_result" / "app.py"
    spec = util.spec_from_file_location("record_result_app", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    message = _notification("bkt").model_dump_json(by_alias=True)
    envelope = json.dumps({"Type": "Notification", "Message": message, "TopicArn": "arn:t"})
    assert module.parse_notification(envelope).inference_id == "x"


def test_a_result_missing_images_records_the_rest_and_fails_for_a_retry(
    setup: Any, s3_bucket: str
) -> None:
    store, ledger, _ = setup
    _put_io(store, s3_bucket)
    # the endpoint answered for two of the three images
    partial = InvocationResult.model_validate_json(
        store._s3.get_object(Bucket=s3_bucket, Key="async-outputs/x.out")["Body"].read()
    )
    partial.images = partial.images[:2]
    partial.calls = partial.calls[:1]
    store.put_json("async-outputs/x.out", partial.model_dump_json().encode())
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(sfn) as stub:
        stub.add_response(
            "send_task_failure",
            {},
            {"taskToken": TOKEN, "error": "SageMaker.IncompleteResult", "cause": ANY},
        )
        record_result(
            _notification(s3_bucket),
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            price=PRICE,
        )
        stub.assert_no_pending_responses()
    assert {r["image_id"] for r in ledger.image_records("b1")} == {"a-1", "a-2"}
