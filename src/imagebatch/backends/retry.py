"""Throttling that loses nothing: retries with backoff and jitter, concurrency that adapts.

Bedrock answers a busy model with ThrottlingException (429), ServiceUnavailableException
(503) or ModelTimeoutException (408). A chunk retries those itself, with capped exponential
backoff and full jitter so that threads (and chunks) do not retry in step, and it narrows
its own concurrency on every throttle and widens it again after a run of successes (AIMD).
What is still not done when the invocation's time runs short goes back to Step Functions as
unfinished (generate.ChunkUnfinished), whose Retry runs the chunk again later.

AccessDeniedException is different: on a model's first use in an account Bedrock subscribes
the account through AWS Marketplace, and "it may take up to 2 minutes for the subscription
to complete. During this time, API calls may continue to return AccessDeniedException" (AWS,
Bedrock user guide, model access). So a refused model is polled for `AccessWait.window_s`
from its first refusal in this invocation; past that the image fails with
`MODEL_ACCESS_NOT_GRANTED`. These polls do not spend the throttling attempts.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from imagebatch.backends.bedrock import GeneratedImage
from imagebatch.errors import ImageGenerationError, ModelAccessDenied, UnconfirmedCall
from imagebatch.models.records import FailureClass, ImageJob

MODEL_ACCESS_NOT_GRANTED = "model access not granted; run `imagebatch doctor`"


class ImageBackend(Protocol):
    def generate(self, job: ImageJob) -> GeneratedImage: ...


@dataclass(frozen=True)
class BackoffPolicy:
    """Capped exponential backoff with full jitter (delay uniform in [0, min(cap, base*2^n)])."""

    base_s: float = 0.5
    cap_s: float = 20.0
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < self.base_s or self.max_attempts < 1:
            raise ValueError(f"invalid backoff policy: {self}")

    def ceiling(self, retry: int) -> float:
        """The largest delay before retry number `retry` (0 = the first retry)."""
        return float(min(self.cap_s, self.base_s * 2**retry))

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(retry))


@dataclass(frozen=True)
class AccessWait:
    """How long a model's AccessDenied is waited out, and how often it is asked again."""

    window_s: float = 150.0
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        if self.window_s < 0 or self.poll_s <= 0:
            raise ValueError(f"invalid access wait: {self}")


class AdaptiveConcurrency:
    """A resizable semaphore: halve the limit on a throttle, add one after `grow_after`
    successes in a row, never below `minimum` or above `maximum`."""

    def __init__(self, initial: int, maximum: int, *, minimum: int = 1, grow_after: int = 4):
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        self._limit = initial
        self.minimum, self.maximum, self.grow_after = minimum, maximum, grow_after
        self._in_flight = 0
        self._streak = 0
        self._cond = threading.Condition()
        self.throttles = 0
        self.lowest = initial
        self.highest = initial

    @property
    def limit(self) -> int:
        with self._cond:
            return self._limit

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self._in_flight >= self._limit:
                self._cond.wait()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def on_success(self) -> None:
        with self._cond:
            self._streak += 1
            if self._streak >= self.grow_after and self._limit < self.maximum:
                self._limit += 1
                self._streak = 0
                self.highest = max(self.highest, self._limit)
                self._cond.notify_all()

    def on_throttle(self) -> None:
        with self._cond:
            self.throttles += 1
            self._streak = 0
            self._limit = max(self.minimum, self._limit // 2)
            self.lowest = min(self.lowest, self._limit)


@dataclass
class RetryingBackend:
    """Wraps a backend: transient failures are retried here until attempts or time run out.

    Throttles shrink `limiter`; successes grow it. A transient failure that outlives the
    attempts, or that would outlive `time_left_ms() - reserve_ms`, is raised as is (still
    transient), so the chunk hands the image back to Step Functions instead of dropping it.
    An UnconfirmedCall (maybe billed) is raised at once, never called again here.
    A model Bedrock refuses (ModelAccessDenied) is polled within `access_wait` (see above);
    if the invocation's time runs out first, the image goes back unfinished the same way.
    """

    inner: ImageBackend
    limiter: AdaptiveConcurrency
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    time_left_ms: Callable[[], int] = lambda: 2**31
    reserve_ms: int = 0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    access_wait: AccessWait = field(default_factory=AccessWait)
    clock: Callable[[], float] = time.monotonic
    _rng_lock: threading.Lock = field(default_factory=threading.Lock)
    _first_refused: dict[str, float] = field(default_factory=dict)

    def generate(self, job: ImageJob) -> GeneratedImage:
        last: ImageGenerationError | None = None
        attempt = 0
        while attempt < self.policy.max_attempts and self.time_left_ms() >= self.reserve_ms:
            outcome = self._once(job)
            if isinstance(outcome, GeneratedImage):
                return outcome
            last, delay = outcome
            if delay is None:
                attempt += 1
                if attempt >= self.policy.max_attempts:
                    break
                with self._rng_lock:
                    delay = self.policy.delay(attempt - 1, self.rng)
            if delay > (self.time_left_ms() - self.reserve_ms) / 1000:
                break
            self.sleep(delay)
        if last is None:
            raise ImageGenerationError(
                FailureClass.TIMEOUT, "no time left to start this image", transient=True
            )
        raise last

    def _once(self, job: ImageJob) -> GeneratedImage | tuple[ImageGenerationError, float | None]:
        """One call: the image, or (the transient error, the access poll's delay or None
        for the throttling backoff); a permanent failure is raised."""
        with self.limiter.slot():
            try:
                image = self.inner.generate(job)
            except ModelAccessDenied as exc:
                waiting = ImageGenerationError(exc.failure_class, exc.reason, transient=True)
                return waiting, self._access_poll(job.model, exc)
            except UnconfirmedCall:
                # maybe billed: another call here could charge the image twice in one
                # attempt, past what its hold covers (the chunk's next attempt makes it)
                raise
            except ImageGenerationError as exc:
                if not exc.transient:
                    raise
                if exc.failure_class is FailureClass.THROTTLED:
                    self.limiter.on_throttle()
                return exc, None
            self.limiter.on_success()
            return image

    def _access_poll(self, model: str, exc: ModelAccessDenied) -> float:
        """Seconds to wait before asking again, or the permanent failure once the window
        since the model's first refusal has passed (shared by the chunk's threads)."""
        now = self.clock()
        with self._rng_lock:
            first = self._first_refused.setdefault(model, now)
        if now - first >= self.access_wait.window_s:
            raise ImageGenerationError(
                exc.failure_class, f"{MODEL_ACCESS_NOT_GRANTED} ({exc.reason})", transient=False
            ) from exc
        return min(self.access_wait.poll_s, first + self.access_wait.window_s - now)
