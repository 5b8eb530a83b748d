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
from dataclasses import dataclass
from typing import Any, Protocol

from imagebatch.errors import ImageGenerationError
from imagebatch.models.bedrock_models import ImageSize, ModelSpec
from imagebatch.models.identity import image_identity
from imagebatch.models.records import FailureClass, ImageJob


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    seed: int


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


# How each family turns a job into a request, versioned: bump a family's number whenever its
# adapter changes what it sends (a new default, a field), so images made under the old
# request are no longer taken for the new one's (models.identity).
REQUEST_FAMILY_VERSIONS: dict[str, int] = {"stability": 1, "amazon": 1}


def bedrock_identity(job: ImageJob, spec: ModelSpec) -> str:
    """The job's identity on Bedrock: the model id (it carries the version) and the request
    family's version; the guidance the Amazon family sends when the job gives none counts."""
    guidance_default = spec.limits.guidance_default if spec.request_family == "amazon" else None
    return image_identity(
        job,
        backend="bedrock",
        backend_model={"model_id": spec.model_id},
        request_family=spec.request_family,
        family_version=REQUEST_FAMILY_VERSIONS[spec.request_family],
        options={"guidance_default": guidance_default, "quality": "standard"},
    )
