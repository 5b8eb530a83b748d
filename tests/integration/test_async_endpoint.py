"""Submitting a chunk with its task token, and recording the notification that answers it.

S3 and DynamoDB are moto; SageMaker Runtime and Step Functions are botocore Stubbers, which
check every request against the real service models.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber
from support.ledger_summary import as_item

from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.aws.stepfunctions import TaskTokens
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.costs.overhead import EndpointRequest
from imagebatch.costs.prices import InstancePrice, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.costs.usage import (
    LambdaClock,
    rollup_write_units,
    summary_write_units,
    tags_bytes,
)
from imagebatch.errors import ChunkUnfinished, EndpointSubmitError
from imagebatch.models.records import ChunkFile, ChunkRef, ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
    SubmittedRequest,
)
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.pipeline.sagemaker_result import INFERENCE_FAILED, record_result
from imagebatch.pipeline.sagemaker_submit import SubmitTask, submit_chunk

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


def costing(ledger: Ledger) -> EndpointCosting:
    # ml.test has no reference throughput: the tests seed what the endpoint measured
    throughput = EndpointThroughput(ledger.client, ledger.table, ledger.meter)
    throughput.add("ep", "sd15", {"64x64/30/cfg": (100_000, 1)})
    ledger.meter.take()
    return EndpointCosting(
        endpoint_name="ep",
        price=PRICE,
        prices=load_aws_prices().region("us-east-1"),
        path=SageMakerPath(),
        throughput=throughput,
    )


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
            costing=costing(ledger),
            clock=LambdaClock(512),
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
            costing=costing(ledger),
            clock=LambdaClock(512),
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


def _recording(ledger: Ledger) -> dict[str, Any]:
    return {"costing": costing(ledger), "clock": LambdaClock(512)}


def _record_all(store: BatchStore, ledger: Ledger, bucket: str) -> None:
    _put_io(store, bucket)
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(sfn) as stub:
        stub.add_response("send_task_success", {}, {"taskToken": TOKEN, "output": ANY})
        record_result(
            _notification(bucket),
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            **_recording(ledger),
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
            **_recording(ledger),
        )
        # a second delivery of the same notification charges nothing; its answer finds the
        # token already answered, which is not an error
        stub.add_client_error("send_task_success", "TaskDoesNotExist", "already answered")
        again = record_result(
            _notification(s3_bucket),
            store=store,
            ledger=ledger,
            tokens=TaskTokens(sfn),
            **_recording(ledger),
        )
        stub.assert_no_pending_responses()
    assert result is not None
    assert again is None
    # 0.5 s and 0.3 s at 1,000 u$/s
    assert result.cost_micro_usd == 800
    summary = as_item(ledger.get_batch("b1"))
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
            **_recording(ledger),
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
            **_recording(ledger),
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
    assert module.parse_notification(envelope, frozenset({"arn:t"})).inference_id == "x"


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
            **_recording(ledger),
        )
        stub.assert_no_pending_responses()
    assert {r["image_id"] for r in ledger.image_records("b1")} == {"a-1", "a-2"}


# --- budget: holds, settlement, refusals, rework ---------------------------------------------


class _Tokens(TaskTokens):
    """Records the answers instead of calling Step Functions."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str, str]] = []

    def succeed(self, token: str, output: str) -> bool:
        self.answers.append(("success", token, output))
        return True

    def fail(self, token: str, error: str, cause: str) -> bool:
        self.answers.append(("failure", token, error))
        return True


class _Endpoint(AsyncEndpoint):
    """Accepts requests without a SageMaker; `broken` raises as a throttled call would."""

    def __init__(self, broken: bool = False) -> None:
        self.submitted: list[str] = []
        self.broken = broken
        self.tries = 0

    def submit(
        self, input_location: str, inference_id: str, timeout_s: int | None = None
    ) -> SubmittedRequest:
        self.tries += 1
        if self.broken:
            # what the adapter raises when SageMaker refused the request (a throttle)
            raise EndpointSubmitError("ThrottlingException", transient=True, ambiguous=False)
        self.submitted.append(input_location)
        return SubmittedRequest(
            inference_id=inference_id, output_location=f"s3://b/async-outputs/{inference_id}.out"
        )


def _fresh(store: BatchStore, ledger: Ledger) -> dict[str, Any]:
    """A new invocation's adapters: their meters count only what that invocation does."""
    fresh = Ledger(ledger.client, ledger.table)
    return {
        "store": BatchStore(store._s3, store.bucket),
        "ledger": fresh,
        "costing": costing(fresh),
        "clock": LambdaClock(512),
    }


def _capped(ledger: Ledger, cap: int, reserve: int = 1_000) -> None:
    ledger.create_batch(
        "b2",
        {
            "status": "RUNNING",
            "images_total": 3,
            "max_cost_micro_usd": cap,
            "overhead_reserve_micro_usd": reserve,
            "tags": {"team": "shop"},
        },
    )


def _invariant(ledger: Ledger, cap: int) -> dict[str, Any]:
    summary = as_item(ledger.get_batch("b2"))
    assert summary is not None
    assert (
        summary["spent_micro_usd"]
        + summary["reserved_micro_usd"]
        + summary["budget_left_micro_usd"]
        + summary["overhead_reserve_micro_usd"]
        == cap
    )
    assert summary["spent_micro_usd"] <= cap
    return summary


def _capped_chunk(store: BatchStore) -> ChunkRef:
    return store.put_chunk(
        ChunkFile(
            batch_id="b2",
            chunk_id="00000",
            backend="sagemaker",
            output_prefix="outputs/",
            images=jobs(3),
            tags={"team": "shop"},
        )
    )


def _submit(
    store: BatchStore, ledger: Ledger, ref: ChunkRef, endpoint: _Endpoint, tokens: _Tokens
) -> Any:
    task = SubmitTask(batch_id="b2", bucket=store.bucket, chunk=ref, task_token=TOKEN)
    return submit_chunk(task, endpoint=endpoint, tokens=tokens, **_fresh(store, ledger))


def _answer(store: BatchStore, input_location: str, seconds: list[float]) -> AsyncNotification:
    """Plays the container: each image made in a call of its own, of these seconds."""
    invocation = ChunkInvocation.model_validate_json(store.read_uri(input_location))
    result = InvocationResult(
        batch_id="b2",
        chunk_id="00000",
        accelerator="cpu",
        max_batch=1,
        images=[
            ServedImage(
                image_id=job.image_id,
                status="SUCCEEDED",
                seed=job.seed,
                key="k",
                call=i,
                png_bytes=1000,
            )
            for i, job in enumerate(invocation.images[: len(seconds)])
        ],
        calls=[
            ServingCall(call=i, width=64, height=64, steps=30, images=1, seconds=s)
            for i, s in enumerate(seconds)
        ],
    )
    output = f"async-outputs/{invocation.hold_id or 'x'}-{len(seconds)}.out"
    store.put_json(output, result.model_dump_json().encode())
    return AsyncNotification.model_validate(
        {
            "invocationStatus": "Completed",
            # SubmitChunk keys the request by its inference id (RecordResult checks it)
            "inferenceId": input_location.rsplit("/", 1)[-1].removesuffix(".json"),
            "requestParameters": {"endpointName": "ep", "inputLocation": input_location},
            "responseParameters": {"outputLocation": f"s3://{store.bucket}/{output}"},
        }
    )


def test_a_capped_chunk_holds_before_it_submits_and_the_result_settles_the_hold(
    setup: Any,
) -> None:
    store, ledger, _ = setup
    # GIVEN a capped batch with room for its chunk (0.1 s measured per image)
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    endpoint, tokens = _Endpoint(), _Tokens()
    # WHEN the chunk is submitted
    receipt = _submit(store, ledger, ref, endpoint, tokens)
    # THEN budget is held before the request went out, and the request carries the hold
    # and the instance-seconds it covers (3 x 0.1 s x the hold factor 2)
    assert receipt.held_micro_usd is not None
    held = _invariant(ledger, cap)
    assert held["reserved_micro_usd"] == receipt.held_micro_usd > 600
    invocation = ChunkInvocation.model_validate_json(store.read_uri(endpoint.submitted[0]))
    assert invocation.hold_id is not None
    assert invocation.max_seconds == pytest.approx(0.6)
    assert invocation.tags == {"team": "shop"}
    assert invocation.submit_usage["lambda_requests"] == 1
    # WHEN the endpoint answers (0.1 s per image at 1,000 u$/s)
    result = record_result(
        _answer(store, endpoint.submitted[0], [0.1, 0.1, 0.1]),
        tokens=tokens,
        **_fresh(store, ledger),
    )
    # THEN the hold is settled to the charge: images, both Lambdas, messages, transitions
    assert result is not None
    summary = _invariant(ledger, cap)
    assert summary["reserved_micro_usd"] == 0
    assert summary["cost_micro_usd"] == 300
    assert summary["spent_micro_usd"] > 300
    assert summary["use_lambda_requests"] == 2
    assert summary["use_sfn_transitions"] == 2
    assert summary["use_sns_publishes"] == 1
    assert summary["use_sqs_requests"] == 3
    # request, submit's answer, PNGs, result
    assert summary["use_s3_put_requests"] == 1 + 1 + 3 + 1
    assert list(ledger.query_batch("b2", "RESERVATION#")) == []
    # AND the day rollup carries the batch tags
    (rollup,) = ledger.query_batch("b2", "DAY#")
    assert rollup["tags"] == {"team": "shop"}
    assert tokens.answers[-1][0] == "success"


def test_a_chunk_the_budget_cannot_hold_is_refused_without_a_request(setup: Any) -> None:
    store, ledger, _ = setup
    # GIVEN a cap that covers the bookkeeping reserve and little else
    cap = 1_500
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    endpoint, tokens = _Endpoint(), _Tokens()
    # WHEN the chunk is submitted
    receipt = _submit(store, ledger, ref, endpoint, tokens)
    # THEN nothing went to the endpoint, the images are budget_exhausted, the token is
    # answered, and the refusal's bookkeeping came out of the reserve
    assert receipt.refused
    assert endpoint.submitted == []
    records = list(ledger.image_records("b2"))
    assert {r["failure_class"] for r in records} == {"budget_exhausted"}
    assert len(records) == 3
    assert tokens.answers[0][0] == "success"
    summary = _invariant(ledger, cap)
    assert summary["budget_left_micro_usd"] == cap - 1_000
    assert 0 < summary["spent_micro_usd"] <= 1_000


def test_a_request_that_cannot_be_submitted_releases_its_hold(setup: Any) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    # WHEN SageMaker refuses InvokeEndpointAsync (throttled) with no time left to try again
    task = SubmitTask(batch_id="b2", bucket=store.bucket, chunk=ref, task_token=TOKEN)
    endpoint = _Endpoint(broken=True)
    with pytest.raises(ChunkUnfinished) as unfinished:
        submit_chunk(
            task,
            endpoint=endpoint,
            tokens=_Tokens(),
            time_left_s=lambda: 1.0,
            **_fresh(store, ledger),
        )
    # THEN the state machine is asked to retry every image (ChunkUnfinished), the hold is
    # gone, and only what submit did is spent
    assert endpoint.tries == 1
    assert set(unfinished.value.unfinished) == {"a-1", "a-2", "a-3"}
    summary = _invariant(ledger, cap)
    assert summary["reserved_micro_usd"] == 0
    assert 0 < summary["spent_micro_usd"] < 100
    assert list(ledger.query_batch("b2", "RESERVATION#")) == []


def test_a_late_result_of_a_retried_attempt_is_charged_as_well(setup: Any) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    endpoint, tokens = _Endpoint(), _Tokens()
    # GIVEN attempt 1 timed out in the state machine and attempt 2 was submitted while
    # attempt 1's request was still running
    _submit(store, ledger, ref, endpoint, tokens)
    retry = SubmitTask(
        batch_id="b2", bucket=store.bucket, chunk=ref, task_token=TOKEN + "2", retry_count=1
    )
    submit_chunk(retry, endpoint=endpoint, tokens=tokens, **_fresh(store, ledger))
    assert len(endpoint.submitted) == 2
    # WHEN attempt 2's result is recorded, then attempt 1's arrives late
    record_result(
        _answer(store, endpoint.submitted[1], [0.1, 0.1, 0.1]),
        tokens=tokens,
        **_fresh(store, ledger),
    )
    late = _answer(store, endpoint.submitted[0], [0.2, 0.2, 0.2])
    record_result(late, tokens=tokens, **_fresh(store, ledger))
    # THEN both requests' instance time is charged: attempt 2's on the image records,
    # attempt 1's as rework; both holds are settled
    summary = _invariant(ledger, cap)
    assert summary["cost_micro_usd"] == 300
    assert summary["rework_micro_usd"] == 600
    assert summary["reserved_micro_usd"] == 0
    # AND a second delivery of the late notification charges nothing more
    record_result(late, tokens=tokens, **_fresh(store, ledger))
    assert _invariant(ledger, cap)["spent_micro_usd"] == summary["spent_micro_usd"]


def test_a_failed_request_charges_its_seconds_and_keeps_what_it_made(setup: Any) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    endpoint, tokens = _Endpoint(), _Tokens()
    _submit(store, ledger, ref, endpoint, tokens)
    # GIVEN the container made one image, then its second call raised after 0.4 s
    made = _answer(store, endpoint.submitted[0], [0.1])
    result = InvocationResult.model_validate_json(
        store.read_uri(made.response_parameters.output_location or "")
    )
    result.calls.append(ServingCall(call=1, width=64, height=64, steps=30, images=2, seconds=0.4))
    body = json.dumps(
        {"error": "RuntimeError", "message": "device lost", "partial": result.model_dump()}
    )
    store.put_json("async-failures/x-error.out", body.encode())
    failed = AsyncNotification.model_validate(
        {
            "invocationStatus": "Failed",
            "failureReason": "ClientError: 500",
            "inferenceId": endpoint.submitted[0].rsplit("/", 1)[-1].removesuffix(".json"),
            "requestParameters": {"endpointName": "ep", "inputLocation": endpoint.submitted[0]},
            "responseParameters": {
                "failureLocation": f"s3://{store.bucket}/async-failures/x-error.out"
            },
        }
    )
    # WHEN the error notification is recorded
    record_result(failed, tokens=tokens, **_fresh(store, ledger))
    # THEN the image made is recorded, the failed call's seconds are charged, the hold is
    # settled and the token failed for a retry of the rest
    assert [r["image_id"] for r in ledger.image_records("b2")] == ["a-1"]
    summary = _invariant(ledger, cap)
    assert (summary["cost_micro_usd"], summary["rework_micro_usd"]) == (100, 400)
    assert summary["reserved_micro_usd"] == 0
    assert tokens.answers[-1][2] == INFERENCE_FAILED


def test_a_stopped_call_still_teaches_the_endpoint_its_speed() -> None:
    # GIVEN a whole call (4 images, 1 s) and one stopped after 10 of its 30 steps (0.5 s)
    calls = [
        ServingCall(call=0, width=64, height=64, steps=30, images=4, seconds=1.0),
        ServingCall(
            call=1,
            width=64,
            height=64,
            steps=30,
            images=4,
            seconds=0.5,
            interrupted=True,
            steps_done=10,
        ),
        ServingCall(
            call=2, width=64, height=64, steps=30, images=4, seconds=0.01, interrupted=True
        ),
    ]
    # THEN the stopped call counts as the 1.5 s its steps extrapolate to; one stopped before
    # its first step says nothing
    assert EndpointThroughput.sums(calls) == {"64x64/30/cfg": (2_500_000, 8)}


def test_a_documented_error_notification_reads_the_partial_result_at_the_submitted_failure_location(
    setup: Any,
) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    tokens = _Tokens()
    # GIVEN a request InvokeEndpointAsync accepted, naming where a failure will be written
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    failure_key = "async-failures/req-error.out"
    with Stubber(runtime) as stub:
        stub.add_response(
            "invoke_endpoint_async",
            {
                "InferenceId": "req",
                "OutputLocation": f"s3://{store.bucket}/async-outputs/req.out",
                "FailureLocation": f"s3://{store.bucket}/{failure_key}",
            },
        )
        receipt = submit_chunk(
            SubmitTask(batch_id="b2", bucket=store.bucket, chunk=ref, task_token=TOKEN),
            endpoint=AsyncEndpoint(runtime, "ep", request_ttl_s=600, invocation_timeout_s=900),
            tokens=tokens,
            **_fresh(store, ledger),
        )
    assert receipt.input_location is not None
    # AND the container made one image, then failed; SageMaker stored its error body there
    made = _answer(store, receipt.input_location, [0.1])
    partial = InvocationResult.model_validate_json(
        store.read_uri(made.response_parameters.output_location or "")
    )
    body = json.dumps({"error": "RuntimeError", "message": "lost", "partial": partial.model_dump()})
    store.put_json(failure_key, body.encode())
    # WHEN the error notification arrives in the shape AWS documents: a failureReason and
    # no responseParameters
    failed = AsyncNotification.model_validate(
        {
            "awsRegion": "us-east-1",
            "eventTime": "2026-12-01T10:00:05.000Z",
            "receivedTime": "2026-12-01T10:00:00.000Z",
            "invocationStatus": "Failed",
            "failureReason": "ClientError: Received server error (500) from model.",
            "requestParameters": {"endpointName": "ep", "inputLocation": receipt.input_location},
            # the id submit sent (result_authentication: it names the request object)
            "inferenceId": receipt.inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
    )
    record_result(failed, tokens=tokens, **_fresh(store, ledger))
    # THEN the image it made is recorded from the partial result, and the token failed
    assert [r["image_id"] for r in ledger.image_records("b2")] == ["a-1"]
    assert _invariant(ledger, cap)["cost_micro_usd"] == 100
    assert tokens.answers[-1][2] == INFERENCE_FAILED


def _endpoint_requests(ledger: Ledger) -> list[EndpointRequest]:
    usage = EndpointUsageStore(ledger.client, ledger.table)
    return usage.requests_between(
        "ep", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    )


def test_a_result_whose_hold_was_written_off_is_still_recorded(setup: Any) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    endpoint, tokens = _Endpoint(), _Tokens()
    # GIVEN a request still queued when its hold was written off (charged in full as spent)
    _submit(store, ledger, ref, endpoint, tokens)
    assert ledger.write_off_holds("b2") > 0
    spent = _invariant(ledger, cap)["spent_micro_usd"]
    # WHEN its result arrives: 3 images made, 0.1 s each
    record_result(
        _answer(store, endpoint.submitted[0], [0.1, 0.1, 0.1]),
        tokens=tokens,
        **_fresh(store, ledger),
    )
    # THEN the images it made are recorded, at no charge (the write-off paid for them)
    records = list(ledger.image_records("b2"))
    assert sorted(r["image_id"] for r in records) == ["a-1", "a-2", "a-3"]
    assert {r["status"] for r in records} == {"SUCCEEDED"}
    assert {r["cost_micro_usd"] for r in records} == {0}
    summary = _invariant(ledger, cap)
    assert summary["images_succeeded"] == 3
    assert summary["spent_micro_usd"] >= spent
    # AND its instance-seconds are on the endpoint under its batch, so the observer counts
    # them as this batch's, not as idle of whoever else the window served
    (request,) = _endpoint_requests(ledger)
    assert request.batch_id == "b2"
    assert request.inference_seconds == Decimal("0.3")
    # AND the token is answered
    assert tokens.answers[-1][0] == "success"


def test_two_runs_of_one_inference_id_are_two_requests(setup: Any) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    endpoint, tokens = _Endpoint(), _Tokens()
    # GIVEN one submit whose reply was lost and which botocore sent again: SageMaker queued
    # it twice under the same InferenceId, and names both outputs after that id
    _submit(store, ledger, ref, endpoint, tokens)
    first = _answer(store, endpoint.submitted[0], [0.1, 0.1, 0.1])
    runs = [
        first.model_copy(update={"received_time": f"2026-12-01T10:0{n}:00.000Z", "event_time": at})
        for n, at in ((0, "2026-12-01T10:00:05.000Z"), (1, "2026-12-01T10:01:05.000Z"))
    ]
    assert runs[0].response_parameters == runs[1].response_parameters
    # WHEN both notifications are recorded, and the first delivered again
    for notification in (runs[0], runs[1], runs[0]):
        record_result(notification, tokens=tokens, **_fresh(store, ledger))
    # THEN each run's seconds are on the endpoint under the batch, once each
    requests = _endpoint_requests(ledger)
    assert len(requests) == 2
    assert sum(r.inference_seconds for r in requests) == Decimal("0.6")
    assert {r.batch_id for r in requests} == {"b2"}
    # AND the images are charged once, by the run that settled the hold
    assert _invariant(ledger, cap)["cost_micro_usd"] == 300


def _unreachable_endpoint() -> AsyncEndpoint:
    """InvokeEndpointAsync over a connection that fails: nothing listens on port 9, so the
    call raises what botocore raises when the network, not SageMaker, failed."""
    runtime = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1),
    )
    return AsyncEndpoint(runtime, "ep", request_ttl_s=600, invocation_timeout_s=900)


def test_an_ambiguous_submit_keeps_its_hold(setup: Any) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    tokens = _Tokens()
    # WHEN InvokeEndpointAsync fails on the network: the request may have been queued
    task = SubmitTask(batch_id="b2", bucket=store.bucket, chunk=ref, task_token=TOKEN)
    receipt = submit_chunk(
        task, endpoint=_unreachable_endpoint(), tokens=tokens, **_fresh(store, ledger)
    )
    # THEN its hold stays for the result (or the write-off once the request's TTL is past),
    # and the token is left to the result or the heartbeat timeout
    assert receipt.held_micro_usd is not None
    summary = _invariant(ledger, cap)
    assert summary["reserved_micro_usd"] == receipt.held_micro_usd
    assert tokens.answers == []


def test_a_throttled_submit_is_retried_instead_of_failing_the_chunk(setup: Any) -> None:
    store, ledger, _ = setup
    cap = 1_000_000
    _capped(ledger, cap)
    ref = _capped_chunk(store)
    tokens = _Tokens()
    # GIVEN SageMaker throttles the first InvokeEndpointAsync (botocore's own retries spent)
    runtime = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    ids: list[str] = []
    runtime.meta.events.register(
        "provide-client-params.sagemaker-runtime.InvokeEndpointAsync",
        lambda params, **_: ids.append(params["InferenceId"]),
    )
    with Stubber(runtime) as stub:
        stub.add_client_error(
            "invoke_endpoint_async",
            service_error_code="ThrottlingException",
            service_message="Rate exceeded",
            http_status_code=400,
        )
        stub.add_response("invoke_endpoint_async", {"InferenceId": "req"})
        # WHEN the chunk is submitted
        receipt = submit_chunk(
            SubmitTask(batch_id="b2", bucket=store.bucket, chunk=ref, task_token=TOKEN),
            endpoint=AsyncEndpoint(runtime, "ep", request_ttl_s=600, invocation_timeout_s=900),
            tokens=tokens,
            **_fresh(store, ledger),
        )
        stub.assert_no_pending_responses()
    # THEN it was submitted on the second try, under the InferenceId of the first (had the
    # first been queued after all, its run is recognised as a run of the same request)
    assert len(ids) == 2
    assert ids[0] == ids[1] == receipt.inference_id
    assert receipt.images == 3
    assert _invariant(ledger, cap)["reserved_micro_usd"] == receipt.held_micro_usd


def test_a_capped_request_is_time_bounded_by_its_hold(setup: Any) -> None:
    store, ledger, _ = setup
    # GIVEN a capped batch whose chunk's hold covers 0.6 instance-seconds (3 x 0.1 s x 2)
    _capped(ledger, 1_000_000)
    ref = _capped_chunk(store)
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    # WHEN it is submitted to an endpoint whose stack allows requests an hour
    with Stubber(runtime) as stub:
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
                # THEN SageMaker is told to stop it past what the hold covers: twice its
                # seconds (a call past them runs to its end; one call is at most all of
                # them) and a minute of the container's S3 reads and writes
                "InvocationTimeoutSeconds": 2 * 1 + 60,
            },
        )
        task = SubmitTask(batch_id="b2", bucket=store.bucket, chunk=ref, task_token=TOKEN)
        receipt = submit_chunk(
            task,
            store=store,
            ledger=ledger,
            endpoint=AsyncEndpoint(runtime, "ep", request_ttl_s=600, invocation_timeout_s=3600),
            tokens=_Tokens(),
            costing=costing(ledger),
            clock=LambdaClock(512),
        )
    assert receipt.held_micro_usd is not None


MAX_TAGS = {f"{i:02d}".ljust(128, "k"): "v" * 256 for i in range(50)}


def test_a_request_hold_covers_the_tag_sized_writes_of_its_commit(setup: Any) -> None:
    store, ledger, _ = setup
    held: dict[str, int] = {}
    # GIVEN the same capped chunk in an untagged batch and in one with the most tags a
    # manifest may carry (the summary and the day rollup its commit updates carry them)
    for batch_id, tags in (("plain", {}), ("tagged", MAX_TAGS)):
        ledger.create_batch(
            batch_id,
            {
                "status": "RUNNING",
                "images_total": 3,
                "max_cost_micro_usd": 1_000_000,
                "overhead_reserve_micro_usd": 1_000,
                "tags": tags or None,
            },
        )
        ref = store.put_chunk(
            ChunkFile(
                batch_id=batch_id,
                chunk_id="00000",
                backend="sagemaker",
                output_prefix="outputs/",
                # the planner gives each job the batch's tags (and its item's)
                images=[job.model_copy(update={"tags": tags}) for job in jobs(3)],
                tags=tags,
            )
        )
        task = SubmitTask(batch_id=batch_id, bucket=store.bucket, chunk=ref, task_token=TOKEN)
        # WHEN each is submitted
        receipt = submit_chunk(
            task, endpoint=_Endpoint(), tokens=_Tokens(), **_fresh(store, ledger)
        )
        assert receipt.held_micro_usd is not None
        held[batch_id] = receipt.held_micro_usd
    # THEN the tagged hold is above the plain one by at least what the tags add to the
    # commit's summary and rollup updates (their gsi1 replicas included), besides the
    # hold's own tag-sized write that submit counted
    size = tags_bytes(MAX_TAGS)
    commit_units = (
        summary_write_units(size)
        - summary_write_units()
        + rollup_write_units(size)
        - rollup_write_units()
    )
    hold_units = summary_write_units(size) - summary_write_units()
    unit = load_aws_prices().region("us-east-1").service("dynamodb_write_request_unit").usd
    least = int((commit_units + hold_units) * unit * Decimal(1_000_000))
    assert held["tagged"] - held["plain"] >= least, (held, least)
