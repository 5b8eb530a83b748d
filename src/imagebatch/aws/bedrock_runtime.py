"""bedrock-runtime InvokeModel: one image per call, AWS errors turned into failure classes.

The request and response shapes are the request family adapters' (backends.bedrock); this
module only sends them and classifies what AWS answered.
"""

from __future__ import annotations

import json
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
    # AccessDeniedException: ModelAccessDenied (classify_client_error), waited out on first use
    "ResourceNotFoundException": (FailureClass.INVALID, False),
}


def classify_client_error(exc: ClientError) -> ImageGenerationError:
    code = exc.response.get("Error", {}).get("Code", "Unknown")
    message = exc.response.get("Error", {}).get("Message", str(exc))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "AccessDeniedException":
        return ModelAccessDenied(f"{code}: {message}")
    failure_class, transient = _ERROR_CLASSES.get(code, (FailureClass.MODEL_ERROR, status >= 500))
    if code == "ValidationException" and is_content_filter_message(message):
        failure_class = FailureClass.CONTENT_FILTERED
    return ImageGenerationError(failure_class, f"{code}: {message}", transient=transient)


class BedrockImageBackend:
    """Makes one image per call through bedrock-runtime InvokeModel."""

    def __init__(self, client: BedrockRuntimeClient, catalogue: ModelCatalogue) -> None:
        self._client = client
        self._catalogue = catalogue

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
                modelId=spec.model_id,
                body=json.dumps(request).encode(),
                contentType="application/json",
                accept="application/json",
            )
        except ClientError as exc:
            raise classify_client_error(exc) from exc
        except (ReadTimeoutError, ConnectionError) as exc:
            raise ImageGenerationError(FailureClass.TIMEOUT, str(exc), transient=True) from exc
        return adapter.parse_response(json.loads(response["body"].read()), job, spec)
