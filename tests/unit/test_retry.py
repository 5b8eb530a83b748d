"""Backoff with jitter, adaptive concurrency, and the retrying backend."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from imagebatch.backends.bedrock import GeneratedImage
from imagebatch.backends.retry import AdaptiveConcurrency, BackoffPolicy, RetryingBackend
from imagebatch.errors import ImageGenerationError
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


def throttled() -> ImageGenerationError:
    return ImageGenerationError(
        FailureClass.THROTTLED, "ThrottlingException: slow down", transient=True
    )


class ScriptedBackend:
    """Answers with the next outcome of a script: an exception to raise or an image."""

    def __init__(self, script: list[ImageGenerationError | GeneratedImage]) -> None:
        self._script: Iterator[ImageGenerationError | GeneratedImage] = iter(script)
        self.calls = 0

    def generate(self, job: ImageJob) -> GeneratedImage:
        self.calls += 1
        outcome = next(self._script)
        if isinstance(outcome, ImageGenerationError):
            raise outcome
        return outcome


def test_backoff_ceiling_doubles_and_caps() -> None:
    policy = BackoffPolicy(base_s=0.5, cap_s=4.0, max_attempts=8)
    assert [policy.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_delays_are_jittered_within_the_ceiling() -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=8.0)
    rng = random.Random(3)
    delays = [policy.delay(3, rng) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    # Full jitter spreads retries over the whole window instead of retrying in step.
    assert min(delays) < 2.0 and max(delays) > 6.0


def test_invalid_backoff_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        BackoffPolicy(base_s=2.0, cap_s=1.0)


def test_concurrency_halves_on_throttle_and_grows_after_successes() -> None:
    limiter = AdaptiveConcurrency(initial=8, maximum=8, grow_after=2)
    limiter.on_throttle()
    assert limiter.limit == 4
    limiter.on_throttle()
    limiter.on_throttle()
    limiter.on_throttle()
    assert limiter.limit == 1  # never below the minimum
    for _ in range(4):
        limiter.on_success()
    assert limiter.limit == 3
    for _ in range(20):
        limiter.on_success()
    assert limiter.limit == 8  # never above the maximum
    assert (limiter.throttles, limiter.lowest, limiter.highest) == (4, 1, 8)


def test_a_throttle_resets_the_success_streak() -> None:
    limiter = AdaptiveConcurrency(initial=2, maximum=4, grow_after=2)
    limiter.on_success()
    limiter.on_throttle()
    limiter.on_success()
    assert limiter.limit == 1


def test_slots_never_exceed_the_current_limit() -> None:
    limiter = AdaptiveConcurrency(initial=2, maximum=2)
    in_slot, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def worker() -> None:
        nonlocal in_slot, peak
        with limiter.slot():
            with lock:
                in_slot += 1
                peak = max(peak, in_slot)
            release.wait(timeout=5)
            with lock:
                in_slot -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(timeout=5)
    assert peak <= 2 and in_slot == 0


def backend_for(
    script: list[ImageGenerationError | GeneratedImage],
    *,
    max_attempts: int = 5,
    time_left_ms: int = 600_000,
    reserve_ms: int = 0,
) -> tuple[RetryingBackend, ScriptedBackend, list[float], AdaptiveConcurrency]:
    inner = ScriptedBackend(script)
    sleeps: list[float] = []
    limiter = AdaptiveConcurrency(initial=4, maximum=4)
    retrying = RetryingBackend(
        inner,
        limiter,
        BackoffPolicy(base_s=1.0, cap_s=30.0, max_attempts=max_attempts),
        time_left_ms=lambda: time_left_ms,
        reserve_ms=reserve_ms,
        rng=random.Random(0),
        sleep=sleeps.append,
    )
    return retrying, inner, sleeps, limiter


def test_throttles_are_retried_with_growing_jittered_delays() -> None:
    retrying, inner, sleeps, limiter = backend_for([throttled(), throttled(), throttled(), IMAGE])
    assert retrying.generate(JOB) is IMAGE
    assert inner.calls == 4
    assert len(sleeps) == 3
    assert all(0 <= d <= 2**n for n, d in enumerate(sleeps))
    assert limiter.throttles == 3 and limiter.limit == 1


@pytest.mark.parametrize(
    "error",
    [
        ImageGenerationError(
            FailureClass.MODEL_ERROR, "ServiceUnavailableException", transient=True
        ),
        ImageGenerationError(FailureClass.TIMEOUT, "ModelTimeoutException", transient=True),
    ],
)
def test_unavailable_and_timeouts_are_retried_without_cutting_concurrency(
    error: ImageGenerationError,
) -> None:
    retrying, inner, _, limiter = backend_for([error, IMAGE])
    assert retrying.generate(JOB) is IMAGE
    assert inner.calls == 2 and limiter.limit == 4


def test_content_filtered_is_not_retried() -> None:
    refusal = ImageGenerationError(
        FailureClass.CONTENT_FILTERED, "Filter reason: prompt", transient=False
    )
    retrying, inner, sleeps, _ = backend_for([refusal, IMAGE])
    with pytest.raises(ImageGenerationError) as caught:
        retrying.generate(JOB)
    assert caught.value is refusal
    assert inner.calls == 1 and sleeps == []


def test_attempts_run_out_with_the_last_transient_error() -> None:
    retrying, inner, sleeps, _ = backend_for([throttled()] * 3, max_attempts=3)
    with pytest.raises(ImageGenerationError) as caught:
        retrying.generate(JOB)
    assert caught.value.failure_class is FailureClass.THROTTLED and caught.value.transient
    assert inner.calls == 3 and len(sleeps) == 2


def test_no_backoff_outlives_the_invocation() -> None:
    # 1.5 s left beyond the reserve: a retry whose delay would run past it is not waited for.
    retrying, inner, sleeps, _ = backend_for(
        [throttled()] * 10, max_attempts=10, time_left_ms=21_500, reserve_ms=20_000
    )
    with pytest.raises(ImageGenerationError) as caught:
        retrying.generate(JOB)
    assert caught.value.transient
    assert sum(sleeps) <= 1.5 * len(sleeps)
    assert all(d <= 1.5 for d in sleeps)
    assert inner.calls < 10


def test_no_time_left_means_no_call() -> None:
    retrying, inner, _, _ = backend_for([IMAGE], time_left_ms=1_000, reserve_ms=20_000)
    with pytest.raises(ImageGenerationError) as caught:
        retrying.generate(JOB)
    assert caught.value.failure_class is FailureClass.TIMEOUT and caught.value.transient
    assert inner.calls == 0
