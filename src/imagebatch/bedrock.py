"""Amazon Bedrock backend: request/response adapters per model family, errors as classes.

Request and response shapes follow the Bedrock model parameter pages linked from the
catalogue (`docs` of each model). Only the adapter knows a family's wire format.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

from imagebatch.catalogue import ModelCatalogue, ModelSpec
from imagebatch.records import FailureClass, ImageJob

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    seed: int


class ImageGenerationError(Exception):
    """An image the backend did not make, with its failure class."""

    def __init__(self, failure_class: FailureClass, reason: str, *, transient: bool) -> None:
        super().__init__(f"{failure_class.value}: {reason}")
        self.failure_class = failure_class
        self.reason = reason
        self.transient = transient


class RequestAdapter(Protocol):
    def build_request(self, job: ImageJob, spec: ModelSpec) -> dict[str, Any]: ...

    def parse_response(self, body: dict[str, Any]) -> GeneratedImage: ...


class StabilityAdapter:
    """Stability AI models (SD3.5 Large, Stable Image Core/Ultra): aspect ratio, not pixels."""

    def build_request(self, job: ImageJob, spec: ModelSpec) -> dict[str, Any]:
        size = spec.size(job.width, job.height)
        if size is None:
            raise ImageGenerationError(
                FailureClass.INVALID,
                f"{job.width}x{job.height} is not a size {spec.model_id} makes",
                transient=False,
            )
        request: dict[str, Any] = {
            "prompt": job.prompt,
            "aspect_ratio": size.aspect_ratio,
            "seed": job.seed,
            "output_format": "png",
        }
        if job.negative_prompt:
            request["negative_prompt"] = job.negative_prompt
        return request

    def parse_response(self, body: dict[str, Any]) -> GeneratedImage:
        reasons = body.get("finish_reasons") or [None]
        reason = reasons[0]
        if reason is not None:
            if str(reason).startswith("Filter reason"):
                raise ImageGenerationError(
                    FailureClass.CONTENT_FILTERED, str(reason), transient=False
                )
            raise ImageGenerationError(FailureClass.MODEL_ERROR, str(reason), transient=True)
        images = body.get("images") or []
        if not images:
            raise ImageGenerationError(
                FailureClass.MODEL_ERROR, "response carried no image", transient=True
            )
        seeds = body.get("seeds") or [0]
        return GeneratedImage(png=base64.b64decode(images[0]), seed=int(seeds[0]))


ADAPTERS: dict[str, RequestAdapter] = {"stability": StabilityAdapter()}

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
    "AccessDeniedException": (FailureClass.MODEL_ERROR, False),
    "ResourceNotFoundException": (FailureClass.INVALID, False),
}


def classify_client_error(exc: ClientError) -> ImageGenerationError:
    code = exc.response.get("Error", {}).get("Code", "Unknown")
    message = exc.response.get("Error", {}).get("Message", str(exc))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    failure_class, transient = _ERROR_CLASSES.get(code, (FailureClass.MODEL_ERROR, status >= 500))
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
        return adapter.parse_response(json.loads(response["body"].read()))
