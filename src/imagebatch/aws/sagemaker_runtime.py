"""SageMaker asynchronous inference: submitting a request whose input is already in S3."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

    def submit(
        self, input_location: str, inference_id: str, timeout_s: int | None = None
    ) -> str | None:
        """InvokeEndpointAsync; returns the output location SageMaker will write to.
        `timeout_s`: the request's own InvocationTimeoutSeconds (its hold's bound), never
        above the stack's."""
        timeout = min(timeout_s, self._invocation_timeout_s) if timeout_s else None
        response = self._runtime.invoke_endpoint_async(
            EndpointName=self.endpoint_name,
            InputLocation=input_location,
            ContentType="application/json",
            Accept="application/json",
            InferenceId=inference_id,
            RequestTTLSeconds=self._request_ttl_s,
            InvocationTimeoutSeconds=timeout or self._invocation_timeout_s,
        )
        return response.get("OutputLocation")
