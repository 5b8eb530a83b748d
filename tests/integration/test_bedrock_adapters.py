"""Request/response adapters per family, against the documented shapes and the local Bedrock."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from imagebatch_local.fakes.bedrock_server import LocalBedrock
from imagebatch_local.fakes.tiny_model import ImageRenderer, build_tiny_model, load_pipeline
from PIL import Image

from imagebatch.aws.bedrock_runtime import BedrockImageBackend, classify_client_error
from imagebatch.backends.bedrock import AmazonAdapter, StabilityAdapter
from imagebatch.errors import ImageGenerationError
from imagebatch.models.bedrock_models import ModelSpec, load_catalogue
from imagebatch.models.records import FailureClass, ImageJob

TITAN = "amazon.titan-image-generator-v2:0"
NOVA = "amazon.nova-canvas-v1:0"
CORE = "stability.stable-image-core-v1:1"
# Before both Amazon models' end of life, so the local Bedrock still serves them.
BEFORE_EOL = date(2026, 6, 1)
PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


def spec(model_id: str) -> ModelSpec:
    found = load_catalogue().get(model_id)
    assert found is not None
    return found


def job(model_id: str, **overrides: Any) -> ImageJob:
    fields: dict[str, Any] = {
        "image_id": "mug-1",
        "item_id": "mug",
        "index": 1,
        "line": 2,
        "prompt": "a white mug",
        "width": 1024,
        "height": 1024,
        "seed": 42,
        "model": model_id,
        **overrides,
    }
    return ImageJob(**fields)


# -- Amazon family: request shape -------------------------------------------------------------


def test_amazon_request_has_the_documented_text_image_shape() -> None:
    request = AmazonAdapter().build_request(
        job(NOVA, negative_prompt="text", width=1280, height=720, guidance=7.5), spec(NOVA)
    )
    assert request == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a white mug", "negativeText": "text"},
        "imageGenerationConfig": {
            "numberOfImages": 1,
            "width": 1280,
            "height": 720,
            "quality": "standard",
            "cfgScale": 7.5,
            "seed": 42,
        },
    }


def test_amazon_request_defaults_cfg_scale_and_folds_the_seed_into_range() -> None:
    request = AmazonAdapter().build_request(job(NOVA, seed=4_000_000_000), spec(NOVA))
    config = request["imageGenerationConfig"]
    assert config["cfgScale"] == 6.5
    assert 0 <= config["seed"] <= 858_993_459
    assert "negativeText" not in request["textToImageParams"]


def test_amazon_request_refuses_a_size_the_model_does_not_make() -> None:
    with pytest.raises(ImageGenerationError) as caught:
        AmazonAdapter().build_request(job(TITAN, width=1600, height=896), spec(TITAN))
    assert caught.value.failure_class is FailureClass.INVALID
    assert not caught.value.transient


# -- Amazon family: response shape ------------------------------------------------------------


def test_amazon_response_images_become_the_image_with_the_sent_seed() -> None:
    image = AmazonAdapter().parse_response(
        {"images": [PNG_1PX], "error": None}, job(TITAN), spec(TITAN)
    )
    assert image.png.startswith(b"\x89PNG") and image.seed == 42


def test_amazon_blocked_output_is_content_filtered_with_the_models_reason() -> None:
    body = {
        "images": [],
        "error": "All of the generated images have been blocked by our content filters.",
    }
    with pytest.raises(ImageGenerationError) as caught:
        AmazonAdapter().parse_response(body, job(NOVA), spec(NOVA))
    assert caught.value.failure_class is FailureClass.CONTENT_FILTERED
    assert not caught.value.transient
    assert "blocked by our content filters" in caught.value.reason


def test_amazon_other_error_is_a_model_error() -> None:
    with pytest.raises(ImageGenerationError) as caught:
        AmazonAdapter().parse_response({"images": [], "error": "boom"}, job(NOVA), spec(NOVA))
    assert caught.value.failure_class is FailureClass.MODEL_ERROR


# -- Stability family ------------------------------------------------------------------------


def test_stability_request_and_response_shapes() -> None:
    adapter = StabilityAdapter()
    request = adapter.build_request(job(CORE, width=1344, height=768), spec(CORE))
    assert request == {
        "prompt": "a white mug",
        "aspect_ratio": "16:9",
        "seed": 42,
        "output_format": "png",
    }
    image = adapter.parse_response(
        {"seeds": [7], "finish_reasons": [None], "images": [PNG_1PX]}, job(CORE), spec(CORE)
    )
    assert image.seed == 7
    with pytest.raises(ImageGenerationError) as caught:
        adapter.parse_response(
            {"seeds": [7], "finish_reasons": ["Filter reason: output image"], "images": []},
            job(CORE),
            spec(CORE),
        )
    assert caught.value.failure_class is FailureClass.CONTENT_FILTERED
    assert caught.value.reason == "Filter reason: output image"


# -- error classes ---------------------------------------------------------------------------


def _client_error(code: str, status: int, message: str = "m") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "InvokeModel")


@pytest.mark.parametrize(
    ("code", "status", "message", "failure_class", "transient"),
    [
        ("ThrottlingException", 429, "Too many requests", FailureClass.THROTTLED, True),
        ("ServiceUnavailableException", 503, "busy", FailureClass.MODEL_ERROR, True),
        ("ModelTimeoutException", 408, "slow", FailureClass.TIMEOUT, True),
        ("SomethingNew", 502, "bad gateway", FailureClass.MODEL_ERROR, True),
        ("ValidationException", 400, "Malformed input", FailureClass.INVALID, False),
        (
            "ValidationException",
            400,
            "This request has been blocked by our content filters. Please adjust your text prompt",
            FailureClass.CONTENT_FILTERED,
            False,
        ),
    ],
)
def test_client_errors_get_a_class_and_a_retry_decision(
    code: str, status: int, message: str, failure_class: FailureClass, transient: bool
) -> None:
    error = classify_client_error(_client_error(code, status, message))
    assert (error.failure_class, error.transient) == (failure_class, transient)
    assert message in error.reason


# -- round trip through the local Bedrock ------------------------------------------------------


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> ImageRenderer:
    return ImageRenderer(load_pipeline(build_tiny_model(tmp_path_factory.mktemp("tiny") / "m")))


@pytest.fixture
def bedrock(renderer: ImageRenderer) -> Iterator[LocalBedrock]:
    with LocalBedrock(renderer, today=BEFORE_EOL) as server:
        yield server


def client_for(endpoint: str) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.mark.parametrize(
    ("model_id", "width", "height", "local_size"),
    [(TITAN, 1152, 768, (96, 64)), (NOVA, 1280, 720, (112, 64)), (CORE, 1344, 768, (112, 64))],
)
def test_backend_round_trip_through_the_local_bedrock(
    bedrock: LocalBedrock,
    model_id: str,
    width: int,
    height: int,
    local_size: tuple[int, int],
) -> None:
    backend = BedrockImageBackend(client_for(bedrock.endpoint_url), load_catalogue())
    image = backend.generate(job(model_id, width=width, height=height, seed=5))
    assert Image.open(io.BytesIO(image.png)).size == local_size
    assert image.seed == 5
    assert bedrock.stats.images_returned == 1


def test_local_bedrock_answers_amazon_requests_in_the_amazon_shape(bedrock: LocalBedrock) -> None:
    client = client_for(bedrock.endpoint_url)
    body = {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a lighthouse"},
        "imageGenerationConfig": {"numberOfImages": 2, "width": 512, "height": 512, "seed": 0},
    }
    result = json.loads(client.invoke_model(modelId=TITAN, body=json.dumps(body))["body"].read())
    assert set(result) == {"images", "error"} and result["error"] is None
    assert len(result["images"]) == 2
    assert bedrock.stats.images_returned == 2


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"textToImageParams": {"text": "x"}}, "required key [taskType]"),
        ({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": ""}}, "#/textToImageParams/text"),
        ({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x" * 513}}, "maxLength: 512"),
        (
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "x"},
                "imageGenerationConfig": {"seed": -1},
            },
            "#/imageGenerationConfig/seed",
        ),
        (
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "x"},
                "imageGenerationConfig": {"cfgScale": 11},
            },
            "#/imageGenerationConfig/cfgScale",
        ),
        (
            {
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "x"},
                "imageGenerationConfig": {"width": 1600, "height": 896},
            },
            "1600x896 is not supported",
        ),
        ({"prompt": "x"}, "extraneous key [prompt]"),
    ],
)
def test_local_bedrock_validates_amazon_bodies(
    bedrock: LocalBedrock, body: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ClientError) as caught:
        client_for(bedrock.endpoint_url).invoke_model(modelId=TITAN, body=json.dumps(body))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert fragment in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("trigger", "failure_class"),
    [
        ("[[filtered]]", FailureClass.CONTENT_FILTERED),
        ("[[filtered-prompt]]", FailureClass.CONTENT_FILTERED),
    ],
)
@pytest.mark.parametrize("model_id", [NOVA, CORE])
def test_each_familys_refusal_is_content_filtered(
    bedrock: LocalBedrock, model_id: str, trigger: str, failure_class: FailureClass
) -> None:
    backend = BedrockImageBackend(client_for(bedrock.endpoint_url), load_catalogue())
    with pytest.raises(ImageGenerationError) as caught:
        backend.generate(job(model_id, prompt=f"a lighthouse {trigger}", width=1024, height=1024))
    assert caught.value.failure_class is failure_class
    assert not caught.value.transient
    assert bedrock.stats.images_returned == 0


def test_retired_model_answers_as_aws_does_after_end_of_life(renderer: ImageRenderer) -> None:
    with LocalBedrock(renderer, today=date(2026, 11, 22)) as server:
        backend = BedrockImageBackend(client_for(server.endpoint_url), load_catalogue())
        with pytest.raises(ImageGenerationError) as caught:
            backend.generate(job(NOVA))
    assert caught.value.failure_class is FailureClass.INVALID
    assert "end of its life" in caught.value.reason
