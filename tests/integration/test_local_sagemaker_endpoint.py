"""The local async endpoint speaks InvokeEndpointAsync's wire format, errors included."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from imagebatch_local.cloud.local_stack import LocalStack
from imagebatch_local.fakes.sagemaker_endpoint import AsyncEndpointConfig, LocalAsyncEndpoint


def _stack() -> LocalStack:
    stack = LocalStack("s", Path("."), {"Resources": {}})
    stack.sagemaker = {
        "Endpoint": {"Type": "AWS::SageMaker::Endpoint", "Name": "s-images"},
        "Config": {
            "Type": "AWS::SageMaker::EndpointConfig",
            "Name": "cfg",
            "ProductionVariants": [{"InstanceType": "ml.inf2.xlarge"}],
            "AsyncInferenceConfig": {
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1},
                "OutputConfig": {
                    "S3OutputPath": "s3://bucket/async-outputs",
                    "S3FailurePath": "s3://bucket/async-failures/",
                },
            },
        },
        "Model": {
            "Type": "AWS::SageMaker::Model",
            "Name": "m",
            "PrimaryContainer": {"Environment": {"IMAGEBATCH_MAX_BATCH": 4}},
        },
    }
    return stack


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalAsyncEndpoint, object]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # nothing listens here: the accepted request fails in the background, which is recorded
    endpoint = LocalAsyncEndpoint(
        AsyncEndpointConfig(_stack()), Path("unused"), "http://127.0.0.1:9"
    )
    url = endpoint.start()
    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1")
    try:
        yield endpoint, client
    finally:
        endpoint.stop()


def test_config_comes_from_the_template_resources() -> None:
    config = AsyncEndpointConfig(_stack())
    assert config.endpoint_name == "s-images"
    assert config.output_path == "s3://bucket/async-outputs/"
    assert config.failure_path == "s3://bucket/async-failures/"
    assert config.environment == {"IMAGEBATCH_MAX_BATCH": "4"}
    assert config.success_topic is None


def test_accepts_with_202_and_the_locations(runtime: tuple[LocalAsyncEndpoint, object]) -> None:
    endpoint, client = runtime
    response = client.invoke_endpoint_async(  # type: ignore[attr-defined]
        EndpointName="s-images", InputLocation="s3://bucket/in.json", InferenceId="chunk-1"
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "chunk-1"
    assert response["OutputLocation"] == "s3://bucket/async-outputs/chunk-1.out"
    assert response["FailureLocation"] == "s3://bucket/async-failures/chunk-1-error.out"
    # AND a request that cannot be processed (no S3 here) is reported, not lost
    deadline = time.monotonic() + 60
    while not endpoint.errors and time.monotonic() < deadline:
        time.sleep(0.1)
    assert endpoint.errors


def test_unknown_endpoint_is_a_validation_error(runtime: tuple[LocalAsyncEndpoint, object]) -> None:
    _, client = runtime
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint_async(  # type: ignore[attr-defined]
            EndpointName="nope", InputLocation="s3://bucket/in.json"
        )
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint nope of account" in caught.value.response["Error"]["Message"]


class _InstantInstance:
    """The serving app's start and stop, without a model: what DescribeEndpoint reports
    around them is under test, not the container."""

    def start(self) -> str:
        return "http://127.0.0.1:9"

    def stop(self) -> None:
        return None


def test_describe_endpoint_and_state_changes_follow_the_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the local endpoint, with what the EventBridge rule would deliver captured
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    seen: list[tuple[str, int, int]] = []
    endpoint: LocalAsyncEndpoint

    def on_state_change(event: dict[str, object]) -> None:
        # the observer reads DescribeEndpoint when the event arrives, as on AWS
        variant = sagemaker.describe_endpoint(EndpointName="s-images")["ProductionVariants"][0]
        detail = event["detail"]
        assert isinstance(detail, dict) and detail["EndpointName"] == "s-images"
        assert event["detail-type"] == "SageMaker Endpoint State Change"
        seen.append(
            (
                str(detail["EndpointStatus"]),
                variant["DesiredInstanceCount"],
                variant["CurrentInstanceCount"],
            )
        )

    endpoint = LocalAsyncEndpoint(
        AsyncEndpointConfig(_stack()),
        Path("unused"),
        "http://127.0.0.1:9",
        on_state_change=on_state_change,
    )
    endpoint._serving = _InstantInstance()  # type: ignore[assignment]
    url = endpoint.start()
    sagemaker = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1")
    try:
        described = sagemaker.describe_endpoint(EndpointName="s-images")
        assert described["EndpointStatus"] == "InService"
        assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 0
        with pytest.raises(ClientError, match="Could not find endpoint"):
            sagemaker.describe_endpoint(EndpointName="other")
        # WHEN the first request needs an instance, and the endpoint later scales in
        endpoint._instance_url()
        endpoint.scale_in()
    finally:
        endpoint.stop()
    # THEN each change was announced, and DescribeEndpoint said the same at that moment
    assert seen == [
        ("UPDATING", 1, 0),
        ("IN_SERVICE", 1, 1),
        ("UPDATING", 0, 1),
        ("IN_SERVICE", 0, 0),
    ]


def test_the_error_notification_has_exactly_the_documented_shape() -> None:
    # GIVEN a request the container answered with a 500
    endpoint = LocalAsyncEndpoint(
        AsyncEndpointConfig(_stack()), Path("unused"), "http://127.0.0.1:9"
    )
    request: dict[str, Any] = {
        "inference_id": "chunk-1",
        "input_location": "s3://bucket/in.json",
        "content_type": "application/json",
        "received": datetime(2026, 12, 1, tzinfo=UTC),
        "failure_location": "s3://bucket/async-failures/chunk-1-error.out",
    }
    # WHEN the local endpoint builds its notification
    failed = endpoint._notification(request, 500, "application/json", request["failure_location"])
    # THEN it is the error message of the SageMaker developer guide ("Check prediction
    # results", async-inference-check-predictions): a failureReason, and no
    # responseParameters (no failureLocation: the caller keeps InvokeEndpointAsync's)
    assert set(failed) == {
        "awsRegion",
        "eventTime",
        "receivedTime",
        "invocationStatus",
        "failureReason",
        "requestParameters",
        "inferenceId",
        "eventVersion",
        "eventSource",
        "eventName",
    }
    assert failed["invocationStatus"] == "Failed"
    assert failed["failureReason"].startswith("ClientError: Received server error (500)")
    assert failed["requestParameters"] == {
        "endpointName": "s-images",
        "inputLocation": "s3://bucket/in.json",
    }
