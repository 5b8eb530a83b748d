"""bedrock-runtime InvokeModel: one image per call, AWS errors turned into failure classes.

The request and response shapes are the request family adapters' (backends.bedrock); this
module only sends them and classifies what AWS answered. A call sent whose reply never came
whole is an UnconfirmedCall: Bedrock may have billed it, so the chunk charges it as rework.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
)

from imagebatch.aws.clients import BEDROCK_CALL_BOUND_S
from imagebatch.backends.bedrock import ADAPTERS, GeneratedImage, is_content_filter_message
from imagebatch.errors import ImageGenerationError, ModelAccessDenied, UnconfirmedCall
from imagebatch.models.bedrock_models import ModelCatalogue, ModelSpec
from imagebatch.models.records import FailureClass, ImageJob

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

# Bedrock error codes -> (failure class, worth retrying)
_ERROR_CLASSES: dict[str, tuple[FailureClass, bool]] = {
    "ThrottlingException": (FailureClass.THROTTLED, True),
    "ServiceQuotaExceededException": (FailureClass.THROTTLED, True),
    "ServiceUnavailableException": (FailureClass.MODEL_ERROR, True),
    "InternalServerException": (FailureClass.MODEL_ERROR, True),
    "ModelNotReadyException": (FailureClass.MODEL_ERROR, True),
    "ModelTimeoutException": (FailureClass.TIMEOUT, True),
    "ValidationException": (FailureClass.INVALID, False),
    "ModelErrorException": (FailureClass.MODEL_ERROR, False),
    # An IAM denial stays permanent; any other AccessDenied (model access, the Marketplace
    # subscription of a first use) is ModelAccessDenied, waited out (backends.retry).
    "AccessDeniedException": (FailureClass.MODEL_ERROR, False),
    "ResourceNotFoundException": (FailureClass.INVALID, False),
}

# How IAM words a denial ("User: ARN is not authorized to perform: ACTION on resource: ...",
# the colon sets it apart from the Marketplace refusal "... not authorized to perform the
# required AWS Marketplace actions ...", which is waited out);
# no waiting makes a missing grant appear.
IAM_DENIAL = "is not authorized to perform:"


def classify_client_error(exc: ClientError) -> ImageGenerationError:
    code = exc.response.get("Error", {}).get("Code", "Unknown")
    message = exc.response.get("Error", {}).get("Message", str(exc))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "AccessDeniedException" and IAM_DENIAL not in message:
        return ModelAccessDenied(f"{code}: {message}")
    failure_class, transient = _ERROR_CLASSES.get(code, (FailureClass.MODEL_ERROR, status >= 500))
    if code == "ValidationException" and is_content_filter_message(message):
        failure_class = FailureClass.CONTENT_FILTERED
    return ImageGenerationError(failure_class, f"{code}: {message}", transient=transient)


# Below this, a call is not started: no image comes back that fast, and a started call
# that Lambda kills before the commit is paid for and lost.
MIN_CALL_S = 5
_BOUND_STEP_S = 5


@dataclass(frozen=True)
class CallDeadline:
    """When the invocation's calls must end: `time_left_ms()` minus the commit reserve.
    `within(total_s)`: a client whose call ends within total_s (clients.py)."""

    time_left_ms: Callable[[], int]
    reserve_ms: int
    within: Callable[[int], BedrockRuntimeClient]


class BedrockImageBackend:
    """Makes one image per call through bedrock-runtime InvokeModel; with a deadline, no call
    outlives the invocation's commit reserve."""

    def __init__(
        self,
        client: BedrockRuntimeClient,
        catalogue: ModelCatalogue,
        inference_profiles: Mapping[str, str] | None = None,
        deadline: CallDeadline | None = None,
    ) -> None:
        """`inference_profiles`: model id -> the stack's application inference profile ARN
        to invoke it through (its tags split Bedrock spend per stack in Cost Explorer);
        `deadline`: no call outlives the invocation's commit reserve."""
        self._client = client
        self._catalogue = catalogue
        self._profiles = dict(inference_profiles or {})
        self._deadline = deadline

    def _client_for_call(self) -> BedrockRuntimeClient:
        """The shared client when its timeouts end in time; else one bounded by the time
        left (in 5 s steps, rounded down); ImageGenerationError when too little is left."""
        if self._deadline is None:
            return self._client
        spare_s = (self._deadline.time_left_ms() - self._deadline.reserve_ms) // 1000
        if spare_s < MIN_CALL_S:
            raise ImageGenerationError(
                FailureClass.TIMEOUT,
                f"{spare_s} s left before the commit reserve: too little to start a call",
                transient=True,
            )
        if spare_s >= BEDROCK_CALL_BOUND_S:
            return self._client
        return self._deadline.within(max(MIN_CALL_S, spare_s // _BOUND_STEP_S * _BOUND_STEP_S))

    def spec(self, model_id: str) -> ModelSpec:
        spec = self._catalogue.get(model_id)
        if spec is None:
            raise ImageGenerationError(
                FailureClass.INVALID, f"unknown model {model_id}", transient=False
            )
        return spec

    def generate(self, job: ImageJob) -> GeneratedImage:
        spec = self.spec(job.model)
        adapter = ADAPTERS[spec.request_family]
        request = adapter.build_request(job, spec)
        client = self._client_for_call()
        try:
            response = client.invoke_model(
                modelId=self._profiles.get(spec.model_id, spec.model_id),
                body=json.dumps(request).encode(),
                contentType="application/json",
                accept="application/json",
            )
            body = response["body"].read()
        except ClientError as exc:
            raise classify_client_error(exc) from exc
        except ConnectionError as exc:
            # no connection was made (EndpointConnectionError, ConnectTimeoutError, ...):
            # nothing reached Bedrock, nothing was billed
            raise ImageGenerationError(FailureClass.TIMEOUT, str(exc), transient=True) from exc
        except (HTTPClientError, IncompleteReadError) as exc:
            # sent, then the reply was lost or cut (ReadTimeoutError, ConnectionClosedError,
            # ResponseStreamingError, a short body): Bedrock may have billed the image
            raise UnconfirmedCall(f"no whole reply: {exc}") from exc
        return adapter.parse_response(json.loads(body), job, spec)
