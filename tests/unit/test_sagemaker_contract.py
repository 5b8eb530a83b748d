"""The SageMaker backend's contract: shape buckets, the notification shape, per-image costs."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from imagebatch.aws.s3_store import split_s3_uri
from imagebatch.costs.prices import InstancePrice, load_aws_prices
from imagebatch.costs.sagemaker_seconds import price_outcomes, price_result
from imagebatch.models.records import FailureClass, ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    InvocationResult,
    ServedImage,
    ServingCall,
    ShapeBucket,
    bucket_error,
    parse_buckets,
)

PRICE = InstancePrice(
    instance_type="ml.test",
    accelerator="none",
    usd_per_hour=Decimal("3.6"),  # 1,000 micro-dollars per second: easy arithmetic
    source="test",
    retrieved=date(2026, 11, 1),
)


def job(image_id: str, width: int = 64, height: int = 64) -> ImageJob:
    return ImageJob(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        index=1,
        line=2,
        prompt="a mug",
        width=width,
        height=height,
        seed=7,
        model="sd15",
    )


def test_parse_buckets_reads_sizes_and_rejects_garbage() -> None:
    assert parse_buckets(" 512x512, 768x768 ") == (
        ShapeBucket(width=512, height=512),
        ShapeBucket(width=768, height=768),
    )
    assert parse_buckets("") == ()
    with pytest.raises(ValueError, match="not WIDTHxHEIGHT"):
        parse_buckets("512by512")


def test_bucket_error_names_the_buckets_and_empty_means_any() -> None:
    buckets = parse_buckets("512x512,768x768")
    assert bucket_error(512, 512, buckets) is None
    reason = bucket_error(1024, 1024, buckets)
    assert reason is not None
    assert "1024x1024" in reason
    assert "512x512, 768x768" in reason
    assert bucket_error(1024, 1024, ()) is None


def test_notification_parses_the_documented_success_and_error_shapes() -> None:
    # GIVEN the message shapes SageMaker publishes (async-inference-check-predictions.html)
    success = {
        "awsRegion": "us-east-1",
        "eventTime": "2022-01-25T22:46:00.608Z",
        "receivedTime": "2022-01-25T22:46:00.455Z",
        "invocationStatus": "Completed",
        "requestParameters": {
            "contentType": "text/csv",
            "endpointName": "ep",
            "inputLocation": "s3://b/in/input.csv",
        },
        "responseParameters": {
            "contentType": "text/csv; charset=utf-8",
            "outputLocation": "s3://b/out/prediction.out",
        },
        "inferenceId": "11111111-2222-3333-4444-555555555555",
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    failed = {
        **success,
        "invocationStatus": "Failed",
        "failureReason": "ClientError: Received server error (500) from model.",
        "responseParameters": {"contentType": "application/json", "failureLocation": "s3://b/f"},
    }
    # WHEN parsed
    ok = AsyncNotification.model_validate_json(json.dumps(success))
    bad = AsyncNotification.model_validate_json(json.dumps(failed))
    # THEN the fields record_result reads are there
    assert ok.response_parameters.output_location == "s3://b/out/prediction.out"
    assert ok.request_parameters.input_location == "s3://b/in/input.csv"
    assert bad.invocation_status == "Failed"
    assert bad.response_parameters.failure_location == "s3://b/f"
    assert split_s3_uri("s3://b/in/input.csv") == ("b", "in/input.csv")


def _result() -> InvocationResult:
    # Call 0: three images in 0.010001 s; call 1: one image in 0.5 s; one image failed.
    return InvocationResult(
        batch_id="batch",
        chunk_id="00000",
        accelerator="cpu",
        max_batch=4,
        images=[
            ServedImage(image_id="a-1", status="SUCCEEDED", seed=7, key="k1", call=0),
            ServedImage(image_id="a-2", status="SUCCEEDED", seed=7, key="k2", call=0),
            ServedImage(image_id="a-3", status="SUCCEEDED", seed=7, key="k3", call=0),
            ServedImage(
                image_id="b-1",
                status="FAILED",
                seed=7,
                failure_class=FailureClass.INVALID,
                failure_reason="size",
            ),
            ServedImage(
                image_id="c-1", status="SUCCEEDED", seed=7, key="k5", call=1, inference_seconds=0.5
            ),
        ],
        calls=[
            ServingCall(call=0, width=64, height=64, steps=1, images=3, seconds=0.010001),
            ServingCall(call=1, width=64, height=64, steps=1, images=1, seconds=0.5),
        ],
    )


def _job_ids() -> list[ImageJob]:
    return [job(i) for i in ("a-1", "a-2", "a-3", "b-1", "c-1")]


def test_micro_batched_images_share_their_call_exactly() -> None:
    priced = price_result(_result(), _job_ids(), PRICE)
    costs = {o.image_id: o.cost_micro_usd for o in priced.outcomes}
    # 0.010001 s x 1,000 u$/s = 10.001 -> 10 u$, split 4/3/3; 0.5 s -> 500 u$
    assert costs == {"a-1": 4, "a-2": 3, "a-3": 3, "b-1": 0, "c-1": 500}
    assert priced.rework_micro_usd == 0
    assert priced.total_micro_usd == 510


def test_seconds_no_new_record_carries_are_rework_and_add_up_to_every_call() -> None:
    # GIVEN a result whose call 0 images another attempt recorded, and a call that was
    # stopped mid-step (its images are not in the result)
    result = _result()
    result.calls.append(
        ServingCall(call=2, width=64, height=64, steps=1, images=2, seconds=0.25, interrupted=True)
    )
    # WHEN it is priced
    priced = price_result(result, _job_ids(), PRICE, recorded={"a-1", "a-2", "a-3"})
    # THEN call 0 (10 u$) and call 2 (250 u$) are rework; the new records carry the rest
    assert {o.image_id for o in priced.outcomes} == {"b-1", "c-1"}
    assert priced.rework_micro_usd == 10 + 250
    assert priced.rework_micro_usd + sum(o.cost_micro_usd for o in priced.outcomes) == 760
    assert priced.total_micro_usd == 760


def test_price_outcomes_records_failures_at_zero_with_their_class() -> None:
    jobs = [job(i) for i in ("a-1", "a-2", "a-3", "b-1", "c-1")]
    outcomes = {o.image_id: o for o in price_outcomes(_result(), jobs, PRICE, "sagemaker")}
    assert outcomes["b-1"].status == "FAILED"
    assert outcomes["b-1"].cost_micro_usd == 0
    assert outcomes["b-1"].failure_class is FailureClass.INVALID
    assert outcomes["c-1"].cost_micro_usd == 500
    assert outcomes["c-1"].inference_ms == 500
    assert outcomes["c-1"].backend == "sagemaker"
    assert outcomes["c-1"].price_source is not None
    assert "ml.test" in outcomes["c-1"].price_source


def test_price_outcomes_refuses_images_not_in_the_chunk() -> None:
    with pytest.raises(ValueError, match="not in this chunk"):
        price_outcomes(_result(), [job("a-1")], PRICE, "sagemaker")


def test_every_template_instance_type_has_a_price() -> None:
    prices = load_aws_prices().region("us-east-1")
    for instance_type in ("ml.inf2.xlarge", "ml.g4dn.xlarge", "ml.g5.xlarge"):
        assert prices.instance(instance_type).usd_per_hour > 0
