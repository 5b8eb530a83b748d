"""SageMaker asynchronous inference: submitting a request whose input is already in S3."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from imagebatch.aws.network import NETWORK_ERRORS
from imagebatch.errors import EndpointSubmitError
from imagebatch.models.sagemaker_contract import SubmittedRequest

if TYPE_CHECKING:
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient


# What SageMaker Runtime answers when the same call may succeed later (the API reference's
# InternalFailure and ServiceUnavailable, and throttles).
_TRANSIENT_CODES = frozenset(
    {"InternalFailure", "ServiceUnavailable", "ThrottlingException", "TooManyRequestsException"}
)


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
    ) -> SubmittedRequest:
        """InvokeEndpointAsync; returns where SageMaker will write the result or the error.
        `timeout_s`: the request's own InvocationTimeoutSeconds (its hold's bound), never
        above the stack's. EndpointSubmitError when it failed: whether it may have queued the
        request all the same is for the caller, which keeps the same InferenceId for any
        retry of it."""
        timeout = min(timeout_s, self._invocation_timeout_s) if timeout_s else None
        try:
            response = self._runtime.invoke_endpoint_async(
                EndpointName=self.endpoint_name,
                InputLocation=input_location,
                ContentType="application/json",
                Accept="application/json",
                InferenceId=inference_id,
                RequestTTLSeconds=self._request_ttl_s,
                InvocationTimeoutSeconds=timeout or self._invocation_timeout_s,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise EndpointSubmitError(
                f"InvokeEndpointAsync: {exc}",
                transient=code in _TRANSIENT_CODES or status >= 500 or status == 429,
                # SageMaker answered: it refused this request. (An earlier attempt botocore
                # made may have timed out after SageMaker queued it; such a run is recorded
                # as a second run of the id, see pipeline.sagemaker_result.)
                ambiguous=False,
            ) from exc
        except NETWORK_ERRORS as exc:
            raise EndpointSubmitError(
                f"InvokeEndpointAsync: {exc}", transient=True, ambiguous=True
            ) from exc
        return SubmittedRequest(
            inference_id=response.get("InferenceId") or inference_id,
            output_location=response.get("OutputLocation"),
            failure_location=response.get("FailureLocation"),
        )
