"""SageMaker asynchronous inference: submitting a request whose input is already in S3."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagebatch.models.sagemaker_contract import SubmittedRequest

if TYPE_CHECKING:
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient


class AsyncEndpoint:
    def __init__(
        self,
        client: SageMakerRuntimeClient,
        endpoint_name: str,
        *,
        request_ttl_s: int,
        invocation_timeout_s: int,
    ) -> None:
        self._runtime = client
        self.endpoint_name = endpoint_name
        self._request_ttl_s = request_ttl_s
        self._invocation_timeout_s = invocation_timeout_s

    def submit(self, input_location: str, inference_id: str) -> SubmittedRequest:
        """InvokeEndpointAsync; returns where SageMaker will write the result or the error."""
        response = self._runtime.invoke_endpoint_async(
            EndpointName=self.endpoint_name,
            InputLocation=input_location,
            ContentType="application/json",
            Accept="application/json",
            InferenceId=inference_id,
            RequestTTLSeconds=self._request_ttl_s,
            InvocationTimeoutSeconds=self._invocation_timeout_s,
        )
        return SubmittedRequest(
            inference_id=response.get("InferenceId") or inference_id,
            output_location=response.get("OutputLocation"),
            failure_location=response.get("FailureLocation"),
        )
