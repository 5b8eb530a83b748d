"""SubmitChunk's S3 and InvokeEndpointAsync calls, tried again while the invocation has time
(pipeline.sagemaker_submit says what happens when they still fail)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from aws_lambda_powertools import Logger

from imagebatch.errors import EndpointSubmitError, StorageError

logger = Logger(child=True)

# Tries of one S3 PUT or InvokeEndpointAsync (each after botocore's own), their backoff, and
# the time a try must leave for what follows it (the hold's release, the answer).
SUBMIT_TRIES = 5
SUBMIT_BACKOFF_S = 0.5
SUBMIT_RESERVE_S = 5.0

T = TypeVar("T")


def retrying(call: Callable[[], T], time_left_s: Callable[[], float] | None) -> T:
    """`call`, tried again after a transient StorageError or EndpointSubmitError while
    there is time for the backoff; the last error goes up, an endpoint's marked ambiguous
    when any try got no answer (that try may have queued the request)."""
    ambiguous = False
    for attempt in range(SUBMIT_TRIES):
        try:
            return call()
        except (StorageError, EndpointSubmitError) as exc:
            ambiguous = ambiguous or getattr(exc, "ambiguous", False)
            delay = random.uniform(0, SUBMIT_BACKOFF_S * 2**attempt)
            out_of_time = time_left_s is not None and time_left_s() - delay < SUBMIT_RESERVE_S
            if not exc.transient or attempt == SUBMIT_TRIES - 1 or out_of_time:
                if isinstance(exc, EndpointSubmitError) and ambiguous and not exc.ambiguous:
                    raise EndpointSubmitError(str(exc), transient=True, ambiguous=True) from exc
                raise
            logger.warning("submit retried", extra={"error": str(exc), "delay": delay})
            time.sleep(delay)
    raise AssertionError("unreachable: the last try returns or raises")
