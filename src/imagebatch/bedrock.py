"""Amazon Bedrock backend: request/response adapters per model family, errors as classes.

Request and response shapes follow the Bedrock model parameter pages linked from the
catalogue (`docs` of each model). Only the adapter knows a family's wire format:

- stability: {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format"} ->
  {"seeds", "finish_reasons", "images"}; a refusal is a finish reason "Filter reason: ...".
- amazon: {"taskType": "TEXT_IMAGE", "textToImageParams": {"text", "negativeText"},
  "imageGenerationConfig": {"numberOfImages", "width", "height", "quality", "cfgScale",
  "seed"}} -> {"images", "error"}; a refusal is a ValidationException "... blocked by our
  content filters ..." or an `error` saying the generated images were blocked.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

from imagebatch.catalogue import ImageSize, ModelCatalogue, ModelSpec
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

    def parse_response(
        self, body: dict[str, Any], job: ImageJob, spec: ModelSpec
    ) -> GeneratedImage: ...


def _size_or_invalid(job: ImageJob, spec: ModelSpec) -> ImageSize:
    size = spec.size(job.width, job.height)
    if size is None:
        raise ImageGenerationError(
            FailureClass.INVALID,
            f"{job.width}x{job.height} is not a size {spec.model_id} makes",
            transient=False,
        )
    return size


def model_seed(job: ImageJob, spec: ModelSpec) -> int:
    """The job's seed folded into the model's range (Nova takes up to 858993459)."""
    span = spec.limits.seed_max - spec.limits.seed_min + 1
    if spec.limits.seed_min <= job.seed <= spec.limits.seed_max:
        return job.seed
    return spec.limits.seed_min + job.seed % span


def is_content_filter_message(message: str) -> bool:
    # Stability: finish reason "Filter reason: ..."; Amazon: "... blocked by our content filters".
    lowered = message.lower()
    return lowered.startswith("filter reason") or "content filter" in lowered


class StabilityAdapter:
    """Stability AI models (SD3.5 Large, Stable Image Core/Ultra): aspect ratio, not pixels."""

    def build_request(self, job: ImageJob, spec: ModelSpec) -> dict[str, Any]:
        size = _size_or_invalid(job, spec)
        request: dict[str, Any] = {
            "prompt": job.prompt,
            "aspect_ratio": size.aspect_ratio,
            "seed": model_seed(job, spec),
            "output_format": "png",
        }
        if job.negative_prompt:
            request["negative_prompt"] = job.negative_prompt
        return request

    def parse_response(
        self, body: dict[str, Any], job: ImageJob, spec: ModelSpec
    ) -> GeneratedImage:
        reasons = body.get("finish_reasons") or [None]
        reason = reasons[0]
        if reason is not None:
            if is_content_filter_message(str(reason)):
                raise ImageGenerationError(
                    FailureClass.CONTENT_FILTERED, str(reason), transient=False
                )
            raise ImageGenerationError(FailureClass.MODEL_ERROR, str(reason), transient=True)
        images = body.get("images") or []
        if not images:
            raise ImageGenerationError(
                FailureClass.MODEL_ERROR, "response carried no image", transient=True
            )
        seeds = body.get("seeds") or [model_seed(job, spec)]
        return GeneratedImage(png=base64.b64decode(images[0]), seed=int(seeds[0]))


class AmazonAdapter:
    """Amazon models (Titan Image Generator v2, Nova Canvas): TEXT_IMAGE task, pixel sizes.

    The response has no seeds: the image's seed is the one sent. A refusal arrives either as a
    ValidationException (the prompt was blocked) or as a 200 whose `error` says the generated
    images were blocked.
    """

    def build_request(self, job: ImageJob, spec: ModelSpec) -> dict[str, Any]:
        _size_or_invalid(job, spec)
        params: dict[str, Any] = {"text": job.prompt}
        if job.negative_prompt:
            params["negativeText"] = job.negative_prompt
        config: dict[str, Any] = {
            "numberOfImages": 1,
            "width": job.width,
            "height": job.height,
            "quality": "standard",
            "seed": model_seed(job, spec),
        }
        cfg_scale = job.guidance if job.guidance is not None else spec.limits.guidance_default
        if cfg_scale is not None:
            config["cfgScale"] = cfg_scale
        return {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": params,
            "imageGenerationConfig": config,
        }

    def parse_response(
        self, body: dict[str, Any], job: ImageJob, spec: ModelSpec
    ) -> GeneratedImage:
        error = body.get("error")
        images = body.get("images") or []
        if error and not images:
            failure = (
                FailureClass.CONTENT_FILTERED
                if is_content_filter_message(str(error))
                else FailureClass.MODEL_ERROR
            )
            raise ImageGenerationError(failure, str(error), transient=False)
        if not images:
            raise ImageGenerationError(
                FailureClass.MODEL_ERROR, "response carried no image", transient=True
            )
        return GeneratedImage(png=base64.b64decode(images[0]), seed=model_seed(job, spec))


ADAPTERS: dict[str, RequestAdapter] = {"stability": StabilityAdapter(), "amazon": AmazonAdapter()}

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
