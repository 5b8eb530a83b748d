"""First use of a Marketplace model: AccessDenied waited out for a bounded window, then failed."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from imagebatch_local.fakes.bedrock_server import FIRST_USE_DENIED, LocalBedrock
from imagebatch_local.fakes.renderers import NullRenderer

from imagebatch.aws.bedrock_runtime import BedrockImageBackend, classify_client_error
from imagebatch.backends.bedrock import GeneratedImage
from imagebatch.backends.retry import (
    MODEL_ACCESS_NOT_GRANTED,
    AccessWait,
    AdaptiveConcurrency,
    BackoffPolicy,
    RetryingBackend,
)
from imagebatch.errors import ImageGenerationError, ModelAccessDenied
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import FailureClass, ImageJob

JOB = ImageJob(
    image_id="a-1",
    item_id="a",
    index=1,
    line=1,
    prompt="p",
    width=1024,
    height=1024,
    seed=1,
    model="stability.sd3-5-large-v1:0",
)
IMAGE = GeneratedImage(png=b"png", seed=1)
DENIED = (
    "Model access is denied due to IAM user or service role is not authorized to perform the "
    "required AWS Marketplace actions (aws-marketplace:ViewSubscriptions, "
    "aws-marketplace:Subscribe) to enable access to this model."
)


class FakeTime:
    """A clock that only moves when the backend sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class DeniedFor:
    """Bedrock as on a first use: AccessDenied until `seconds` after the first call."""

    def __init__(self, time: FakeTime, seconds: float) -> None:
        self.time, self.seconds = time, seconds
        self.started: float | None = None
        self.calls = 0

    def generate(self, job: ImageJob) -> GeneratedImage:
        self.calls += 1
        self.started = self.time.now if self.started is None else self.started
        if self.time.now - self.started < self.seconds:
            raise ModelAccessDenied(f"AccessDeniedException: {DENIED}")
        return IMAGE


def _backend(inner: DeniedFor, time: FakeTime, **kwargs: object) -> RetryingBackend:
    return RetryingBackend(
        inner,
        AdaptiveConcurrency(1, 1),
        BackoffPolicy(base_s=0.1, cap_s=1.0, max_attempts=3),
        sleep=time.sleep,
        clock=time.clock,
        access_wait=AccessWait(window_s=150, poll_s=10),
        **kwargs,  # type: ignore[arg-type]
    )


def test_access_denied_is_its_own_class_of_error() -> None:
    error = ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": DENIED},
            "ResponseMetadata": {"HTTPStatusCode": 403},  # type: ignore[typeddict-item]
        },
        "InvokeModel",
    )
    classified = classify_client_error(error)
    assert isinstance(classified, ModelAccessDenied)
    assert classified.failure_class is FailureClass.MODEL_ERROR
    assert not classified.transient


def test_an_iam_denial_is_not_waited_out() -> None:
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/r/f is not authorized to perform: "
        "bedrock:InvokeModel on resource: arn:aws:bedrock:us-west-2::foundation-model/m"
    )
    error = ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 403},  # type: ignore[typeddict-item]
        },
        "InvokeModel",
    )
    classified = classify_client_error(error)
    assert not isinstance(classified, ModelAccessDenied)
    assert classified.failure_class is FailureClass.MODEL_ERROR and not classified.transient


def test_ninety_seconds_of_access_denied_then_the_image_is_made() -> None:
    time = FakeTime()
    inner = DeniedFor(time, 90)
    assert _backend(inner, time).generate(JOB) == IMAGE
    # Polled every 10 s, not with the throttling attempts (3 would have given up at once).
    assert inner.calls == 10
    assert sum(time.slept) == pytest.approx(90)


def test_access_denied_past_the_window_fails_with_the_doctor_hint() -> None:
    time = FakeTime()
    inner = DeniedFor(time, 10_000)
    with pytest.raises(ImageGenerationError) as raised:
        _backend(inner, time).generate(JOB)
    assert not raised.value.transient
    assert raised.value.failure_class is FailureClass.MODEL_ERROR
    assert raised.value.reason.startswith(MODEL_ACCESS_NOT_GRANTED)
    assert sum(time.slept) == pytest.approx(150)


def test_the_window_is_shared_so_later_images_do_not_wait_again() -> None:
    time = FakeTime()
    inner = DeniedFor(time, 10_000)
    backend = _backend(inner, time)
    with pytest.raises(ImageGenerationError):
        backend.generate(JOB)
    slept = len(time.slept)
    with pytest.raises(ImageGenerationError, match="model access not granted"):
        backend.generate(JOB)
    assert len(time.slept) == slept


def test_an_invocation_out_of_time_hands_the_image_back_unfinished() -> None:
    time = FakeTime()
    inner = DeniedFor(time, 90)
    left = {"ms": 35_000}

    def sleep(seconds: float) -> None:
        time.sleep(seconds)
        left["ms"] -= int(seconds * 1000)

    backend = _backend(inner, time, time_left_ms=lambda: left["ms"], reserve_ms=5_000)
    backend.sleep = sleep
    with pytest.raises(ImageGenerationError) as raised:
        backend.generate(JOB)
    # Still transient: the chunk goes back to Step Functions, whose retry asks again.
    assert raised.value.transient
    assert sum(time.slept) == pytest.approx(30)


def test_access_wait_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        AccessWait(window_s=-1)
    with pytest.raises(ValueError):
        AccessWait(poll_s=0)


def test_the_local_bedrock_replays_a_first_use_in_the_wire_format() -> None:
    # GIVEN the local Bedrock denying the model for 90 s from its first call, on a fake clock
    time = FakeTime()
    with LocalBedrock(NullRenderer()) as bedrock:
        bedrock.deny_first_use(JOB.model, 90, clock=time.clock)
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-west-2",
            endpoint_url=bedrock.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        backend = BedrockImageBackend(client, load_catalogue())
        # WHEN the first call is made, and again 89 s and 90 s later
        with pytest.raises(ModelAccessDenied) as first:
            backend.generate(JOB)
        time.sleep(89)
        with pytest.raises(ModelAccessDenied):
            backend.generate(JOB)
        time.sleep(1)
        image = backend.generate(JOB)
    # THEN botocore read AWS's code and message, and the image came once the window passed
    assert first.value.reason == f"AccessDeniedException: {FIRST_USE_DENIED}"
    assert image.png.startswith(b"\x89PNG")
    assert bedrock.stats.errors == 2
