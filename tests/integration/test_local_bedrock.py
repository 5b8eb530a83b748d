"""The local Bedrock Runtime, driven by a real boto3 client over HTTP."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from imagebatch_local.fakes.bedrock_server import LocalBedrock, render_size
from imagebatch_local.fakes.tiny_model import ImageRenderer, build_tiny_model, load_pipeline
from PIL import Image

MODEL = "stability.sd3-5-large-v1:0"


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> ImageRenderer:
    model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return ImageRenderer(load_pipeline(model_dir))


@pytest.fixture
def bedrock(renderer: ImageRenderer) -> Iterator[LocalBedrock]:
    with LocalBedrock(renderer) as server:
        yield server


def client_for(endpoint: str) -> Any:
    # total_max_attempts=1: in botocore's default (legacy) retry mode "max_attempts" counts
    # retries, so max_attempts=1 would still send a throttled request twice.
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def client(bedrock: LocalBedrock) -> Any:
    return client_for(bedrock.endpoint_url)


def invoke(client: Any, body: dict[str, Any], model_id: str = MODEL) -> dict[str, Any]:
    response = client.invoke_model(
        modelId=model_id,
        body=json.dumps(body),
        contentType="application/json",
        accept="application/json",
    )
    assert response["contentType"] == "application/json"
    result: dict[str, Any] = json.loads(response["body"].read())
    return result


def decode(result: dict[str, Any]) -> Image.Image:
    [encoded] = result["images"]
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def error_code(client: Any, body: dict[str, Any], model_id: str = MODEL) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        invoke(client, body, model_id)
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


@pytest.mark.parametrize(
    ("aspect_ratio", "size"), [("1:1", (64, 64)), ("16:9", (112, 64)), ("9:16", (64, 112))]
)
def test_invoke_returns_a_png_at_local_scale(
    client: Any, aspect_ratio: str, size: tuple[int, int]
) -> None:
    result = invoke(client, {"prompt": "a lighthouse", "aspect_ratio": aspect_ratio, "seed": 42})
    assert result["seeds"] == [42]
    assert result["finish_reasons"] == [None]
    image = decode(result)
    assert image.format == "PNG"
    assert image.size == size


def test_default_aspect_ratio_is_square(client: Any) -> None:
    assert decode(invoke(client, {"prompt": "a lighthouse", "seed": 1})).size == (64, 64)


def test_same_seed_same_bytes(client: Any) -> None:
    body = {"prompt": "a lighthouse", "seed": 9}
    first = invoke(client, body)["images"]
    assert invoke(client, body)["images"] == first
    assert invoke(client, {**body, "seed": 10})["images"] != first


def test_seed_zero_is_replaced_by_a_reported_random_seed(client: Any) -> None:
    [seed] = invoke(client, {"prompt": "a lighthouse", "seed": 0})["seeds"]
    assert 1 <= seed <= 4294967294


def test_jpeg_output_format(client: Any) -> None:
    result = invoke(client, {"prompt": "a lighthouse", "seed": 3, "output_format": "jpeg"})
    assert decode(result).format == "JPEG"


def test_model_arn_is_accepted(client: Any) -> None:
    arn = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"
    assert invoke(client, {"prompt": "a lighthouse", "seed": 3}, arn)["seeds"] == [3]


def test_env_endpoint_variable_reaches_the_server(
    bedrock: LocalBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", bedrock.endpoint_url)
    env_client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert invoke(env_client, {"prompt": "a lighthouse", "seed": 4})["seeds"] == [4]
    assert bedrock.stats.invocations == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "[prompt]"),
        ({"prompt": ""}, "#/prompt"),
        ({"prompt": "x" * 10001}, "#/prompt"),
        ({"prompt": 5}, "#/prompt"),
        ({"prompt": "x", "negative_prompt": "y" * 10001}, "#/negative_prompt"),
        ({"prompt": "x", "aspect_ratio": "1:3"}, "#/aspect_ratio"),
        ({"prompt": "x", "seed": -1}, "#/seed"),
        ({"prompt": "x", "seed": 4294967295}, "#/seed"),
        ({"prompt": "x", "seed": "7"}, "#/seed"),
        ({"prompt": "x", "output_format": "webp"}, "#/output_format"),
        ({"prompt": "x", "cfg_scale": 7}, "[cfg_scale]"),
        ({"prompt": "x", "mode": "sketch"}, "#/mode"),
    ],
)
def test_invalid_bodies_are_validation_errors_naming_the_field(
    client: Any, body: dict[str, Any], field: str
) -> None:
    code, status, message = error_code(client, body)
    assert (code, status) == ("ValidationException", 400)
    assert field in message


def test_unknown_model_is_invalid_identifier(client: Any) -> None:
    code, status, message = error_code(client, {"prompt": "x"}, "stability.no-such-model-v9:0")
    assert (code, status, message) == (
        "ValidationException",
        400,
        "The provided model identifier is invalid.",
    )


def test_error_classes_arrive_as_botocore_exceptions(client: Any) -> None:
    with pytest.raises(client.exceptions.ThrottlingException):
        invoke(client, {"prompt": "x [[throttle]]"})
    with pytest.raises(client.exceptions.ValidationException):
        invoke(client, {"prompt": ""})


@pytest.mark.parametrize(
    ("trigger", "code", "status"),
    [
        ("[[throttle]]", "ThrottlingException", 429),
        ("[[timeout]]", "ModelTimeoutException", 408),
        ("[[unavailable]]", "ServiceUnavailableException", 503),
        ("[[not-found]]", "ResourceNotFoundException", 404),
        ("[[denied]]", "AccessDeniedException", 403),
        ("[[internal]]", "InternalServerException", 500),
        ("[[model-error]]", "ModelErrorException", 424),
    ],
)
def test_prompt_triggers_give_each_error_class(
    client: Any, trigger: str, code: str, status: int
) -> None:
    assert error_code(client, {"prompt": f"a lighthouse {trigger}"})[:2] == (code, status)


def test_filtered_prompt_succeeds_without_images(client: Any, bedrock: LocalBedrock) -> None:
    result = invoke(client, {"prompt": "a lighthouse [[filtered]]", "seed": 12})
    assert result == {"seeds": [12], "finish_reasons": ["Filter reason: prompt"], "images": []}
    assert bedrock.stats.filtered == 1
    assert bedrock.stats.images_returned == 0


def test_throttle_rate_one_throttles_everything(renderer: ImageRenderer) -> None:
    with LocalBedrock(renderer, throttle_rate=1.0) as server:
        client = client_for(server.endpoint_url)
        for _ in range(3):
            code, status, message = error_code(client, {"prompt": "a lighthouse"})
            assert (code, status) == ("ThrottlingException", 429)
            assert message == "Too many requests, please wait before trying again."
        assert server.stats.throttled == 3
        assert server.stats.invocations == 3


def test_fault_rates_are_reproducible_from_the_fault_seed(renderer: ImageRenderer) -> None:
    def outcomes() -> list[str]:
        seen = []
        with LocalBedrock(
            renderer, throttle_rate=0.3, content_filter_rate=0.3, fault_seed=123
        ) as server:
            client = client_for(server.endpoint_url)
            for seed in range(1, 13):
                try:
                    result = invoke(client, {"prompt": "a lighthouse", "seed": seed})
                except ClientError as error:
                    seen.append(error.response["Error"]["Code"])
                else:
                    seen.append("filtered" if not result["images"] else "ok")
        return seen

    first = outcomes()
    assert first == outcomes()
    assert {"ok", "filtered", "ThrottlingException"} <= set(first)


def test_stats_count_exactly_what_was_returned(client: Any, bedrock: LocalBedrock) -> None:
    for seed in (1, 2, 3):
        invoke(client, {"prompt": "a lighthouse", "seed": seed})
    invoke(client, {"prompt": "[[filtered]]", "seed": 4})
    for body in ({"prompt": "[[throttle]]"}, {"prompt": ""}):
        with pytest.raises(ClientError):
            invoke(client, body)
    expected = {
        "invocations": 6,
        "images_returned": 3,
        "throttled": 1,
        "filtered": 1,
        "errors": 1,
    }
    assert bedrock.stats.to_dict() == expected
    with urllib.request.urlopen(f"{bedrock.endpoint_url}/_local/stats") as response:
        assert json.loads(response.read()) == expected


def test_render_size_rounds_the_long_side_to_eight() -> None:
    assert render_size("1:1", 64) == (64, 64)
    assert render_size("16:9", 64) == (112, 64)
    assert render_size("21:9", 64) == (152, 64)
    assert render_size("2:3", 64) == (64, 96)


def test_stop_releases_the_port(renderer: ImageRenderer) -> None:
    server = LocalBedrock(renderer)
    endpoint = server.start()
    server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{endpoint}/_local/stats", timeout=2)


def test_server_is_safe_under_concurrent_clients(bedrock: LocalBedrock) -> None:
    # boto3 clients are thread-safe to use but not to create: build them up front.
    clients = [client_for(bedrock.endpoint_url) for _ in range(8)]
    seeds = [1, 2, 3, 4, 1, 2, 3, 4]

    def one(index: int) -> bytes:
        result = invoke(clients[index], {"prompt": "a lighthouse", "seed": seeds[index]})
        return base64.b64decode(result["images"][0])

    with ThreadPoolExecutor(max_workers=8) as pool:
        images = list(pool.map(one, range(8)))
    assert images[:4] == images[4:]
    assert bedrock.stats.images_returned == 8
