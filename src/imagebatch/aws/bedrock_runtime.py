"""bedrock-runtime InvokeModel: one image per call, AWS errors turned into failure classes.

The request and response shapes are the request family adapters' (backends.bedrock); this
module only sends them and classifies what AWS answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

from imagebatch.backends.bedrock import ADAPTERS, GeneratedImage, is_content_filter_message
from imagebatch.errors import ImageGenerationError, ModelAccessDenied
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


class BedrockImageBackend:
    """Makes one image per call through bedrock-runtime InvokeModel."""

    def __init__(
        self,
        client: BedrockRuntimeClient,
        catalogue: ModelCatalogue,
        inference_profiles: Mapping[str, str] | None = None,
    ) -> None:
        """`inference_profiles`: model id -> the stack's application inference profile ARN
        to invoke it through (its tags split Bedrock spend per stack in Cost Explorer)."""
        self._client = client
        self._catalogue = catalogue
        self._profiles = dict(inference_profiles or {})

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
        try:
            response = self._client.invoke_model(
                modelId=self._profiles.get(spec.model_id, spec.model_id),
                body=json.dumps(request).encode(),
                contentType="application/json",
                accept="application/json",
            )
        except ClientError as exc:
            raise classify_client_error(exc) from exc
        except (ReadTimeoutError, ConnectionError) as exc:
            raise ImageGenerationError(FailureClass.TIMEOUT, str(exc), transient=True) from exc
        return adapter.parse_response(json.loads(response["body"].read()), job, spec)
