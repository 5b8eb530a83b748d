"""RecordResult trusts a notification only as far as it can check it (issue 19): an SNS
envelope from one of its topics, the request object under async-inputs/ named by the
notification's inference id (the hold's id when capped), the result under async-outputs/ or
async-failures/. Anything else is dropped: no image recorded, no hold settled, no token
answered. S3 and DynamoDB are moto; Step Functions is a botocore Stubber with no responses,
so any answer to the token fails the test."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from importlib import util
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.stepfunctions import TaskTokens
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.costs.prices import InstancePrice, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
)
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.pipeline.sagemaker_result import record_result

REPO = Path(__file__).resolve().parents[2]
TOKEN = "token-" + "t" * 200
PRICE = InstancePrice(
    instance_type="ml.test",
    accelerator="none",
    usd_per_hour=Decimal("3.6"),
    source="test",
    retrieved=date(2026, 11, 1),
)


def _job(i: int) -> ImageJob:
    return ImageJob(
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


@pytest.fixture
def store(s3_client: Any, s3_bucket: str) -> BatchStore:
    return BatchStore(s3_client, s3_bucket)


@pytest.fixture
def ledger(dynamodb_client: Any, ledger_table: str) -> Ledger:
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch("b1", {"status": "RUNNING", "images_total": 1})
    return ledger


def _request(store: BatchStore, key: str = "async-inputs/b1/req-1.json") -> str:
    invocation = ChunkInvocation(
        batch_id="b1",
        chunk_id="00000",
        bucket=store.bucket,
        output_prefix="outputs/",
        task_token=TOKEN,
        images=[_job(1)],
    )
    store.put_json(key, invocation.model_dump_json().encode())
    return f"s3://{store.bucket}/{key}"


def _result(store: BatchStore, key: str) -> str:
    result = InvocationResult(
        batch_id="b1",
        chunk_id="00000",
        accelerator="cpu",
        max_batch=1,
        images=[ServedImage(image_id="a-1", status="SUCCEEDED", seed=1, key="k", call=0)],
        calls=[ServingCall(call=0, width=64, height=64, steps=1, images=1, seconds=0.0)],
    )
    store.put_json(key, result.model_dump_json().encode())
    return f"s3://{store.bucket}/{key}"


def _notification(input_location: str, output_location: str, inference_id: str) -> Any:
    return AsyncNotification.model_validate(
        {
            "invocationStatus": "Completed",
            "inferenceId": inference_id,
            "requestParameters": {"endpointName": "ep", "inputLocation": input_location},
            "responseParameters": {"outputLocation": output_location},
        }
    )


def _record(notification: Any, store: BatchStore, ledger: Ledger) -> Any:
    throughput = EndpointThroughput(ledger.client, ledger.table, ledger.meter)
    costing = EndpointCosting(
        endpoint_name="ep",
        price=PRICE,
        prices=load_aws_prices().region("us-east-1"),
        path=SageMakerPath(),
        throughput=throughput,
    )
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(sfn):  # no answer expected: a dropped result answers no token
        return record_result(
            notification,
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            costing=costing,
            clock=LambdaClock(512),
        )


def _nothing_recorded(ledger: Ledger) -> None:
    assert list(ledger.image_records("b1")) == []
    summary = ledger.get_batch("b1")
    assert summary is not None and summary.images_succeeded == 0


def test_a_result_for_another_inference_id_is_dropped(store: BatchStore, ledger: Ledger) -> None:
    # The request object is async-inputs/b1/req-1.json: its inference id is req-1.
    forged = _notification(_request(store), _result(store, "async-outputs/a.out"), "req-2")
    assert _record(forged, store, ledger) is None
    _nothing_recorded(ledger)


def test_a_result_outside_async_outputs_is_dropped(store: BatchStore, ledger: Ledger) -> None:
    # outputs/ is writable by manifest authors: a "result" there is anyone's.
    forged = _notification(_request(store), _result(store, "outputs/forged.out"), "req-1")
    assert _record(forged, store, ledger) is None
    _nothing_recorded(ledger)


def test_a_request_outside_async_inputs_is_dropped(store: BatchStore, ledger: Ledger) -> None:
    input_location = _request(store, "outputs/b1/req-1.json")
    forged = _notification(input_location, _result(store, "async-outputs/a.out"), "req-1")
    assert _record(forged, store, ledger) is None
    _nothing_recorded(ledger)


def test_a_result_in_another_bucket_is_dropped(
    store: BatchStore, ledger: Ledger, s3_client: Any
) -> None:
    s3_client.create_bucket(Bucket="someone-elses")
    other = BatchStore(s3_client, "someone-elses")
    forged = _notification(_request(other), _result(other, "async-outputs/a.out"), "req-1")
    assert _record(forged, store, ledger) is None
    _nothing_recorded(ledger)


def _handler_module() -> Any:
    path = REPO / "functions" / "record_result" / "app.py"
    spec = util.spec_from_file_location("record_result_app_auth", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_an_sns_envelope_from_a_result_topic_is_parsed() -> None:
    from imagebatch.errors import ForgedResultError

    module = _handler_module()
    topics = frozenset({"arn:aws:sns:us-east-1:123456789012:success"})
    message = json.dumps(
        {
            "invocationStatus": "Failed",
            "inferenceId": "x",
            "requestParameters": {
                "endpointName": "ep",
                "inputLocation": "s3://b/async-inputs/b1/x.json",
            },
            "responseParameters": {},
        }
    )
    envelope = {"Type": "Notification", "TopicArn": next(iter(topics)), "Message": message}
    assert module.parse_notification(json.dumps(envelope), topics).inference_id == "x"
    with pytest.raises(ForgedResultError, match="not an SNS notification"):
        module.parse_notification(message, topics)  # a raw SQS body: sent to the queue directly
    other = {**envelope, "TopicArn": "arn:aws:sns:us-east-1:123456789012:someone-elses"}
    with pytest.raises(ForgedResultError, match="someone-elses"):
        module.parse_notification(json.dumps(other), topics)
