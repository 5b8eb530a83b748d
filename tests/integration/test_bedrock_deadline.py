"""A Bedrock call never outlives its Lambda's commit reserve (issue 18): a call that starts
is bounded by the time left minus the reserve, and one that cannot finish is not started.

Before, a call could start with 20 s left under a 120 s read timeout; Lambda then killed the
attempt before its commit, with paid-for PNGs stored and nothing recorded."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from PIL import Image

from imagebatch import wiring
from imagebatch.aws import clients
from imagebatch.aws.bedrock_runtime import BedrockImageBackend, CallDeadline
from imagebatch.errors import ImageGenerationError
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import FailureClass, ImageJob
from imagebatch.settings import GenerateSettings

MODEL = "stability.sd3-5-large-v1:0"


def _png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


class _Client:
    """A bedrock-runtime client that answers at once; remembers which one was asked."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def invoke_model(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        body = json.dumps({"images": [_png()], "seeds": [7], "finish_reasons": [None]})
        return {"body": io.BytesIO(body.encode())}


def _job() -> ImageJob:
    return ImageJob(
        image_id="a-1",
        item_id="a",
        index=1,
        line=2,
        prompt="a mug",
        width=1024,
        height=1024,
        seed=7,
        model=MODEL,
    )


def _backend(left_ms: int, reserve_ms: int, asked: list[int]) -> tuple[Any, _Client]:
    default = _Client("default")

    def within(total_s: int) -> Any:
        asked.append(total_s)
        return _Client(f"within {total_s}")

    deadline = CallDeadline(lambda: left_ms, reserve_ms, within)
    return BedrockImageBackend(default, load_catalogue(), deadline=deadline), default  # type: ignore[arg-type]


def test_a_call_near_the_reserve_is_bounded_by_the_time_left() -> None:
    # GIVEN 50 s left in the invocation and a 20 s commit reserve
    asked: list[int] = []
    backend, default = _backend(50_000, 20_000, asked)
    # WHEN an image is made THEN its call may last at most the 30 s between them
    assert backend.generate(_job()).seed == 7
    assert asked and max(asked) <= 30 and default.calls == 0


def test_a_call_that_cannot_finish_before_the_reserve_is_not_started() -> None:
    # GIVEN 21 s left and a 20 s reserve
    asked: list[int] = []
    backend, default = _backend(21_000, 20_000, asked)
    # WHEN an image is asked for THEN no call starts; the image goes back as a timeout
    with pytest.raises(ImageGenerationError) as caught:
        backend.generate(_job())
    assert caught.value.failure_class is FailureClass.TIMEOUT and caught.value.transient
    assert asked == [] and default.calls == 0


def test_with_time_to_spare_the_shared_client_is_used() -> None:
    asked: list[int] = []
    backend, default = _backend(600_000, 20_000, asked)
    backend.generate(_job())
    assert default.calls == 1 and asked == []


def test_a_bounded_client_times_out_within_its_bound(aws_credentials: None) -> None:
    client = clients.bedrock_runtime_client_within(10)
    config: Any = client.meta.config
    assert config.connect_timeout + config.read_timeout <= 10
    assert isinstance(BedrockImageBackend(client, load_catalogue()), BedrockImageBackend)


def test_the_handler_wiring_gives_the_backend_the_invocations_deadline(
    aws_credentials: None,
) -> None:
    settings = GenerateSettings.model_validate(
        {"DATA_BUCKET": "data-bucket", "LEDGER_TABLE": "ledger-table", "AWS_REGION": "us-west-2"}
    )
    backend = wiring.bedrock_backend(settings, time_left_ms=lambda: 21_000, reserve_ms=20_000)
    with pytest.raises(ImageGenerationError):
        backend.generate(_job())
