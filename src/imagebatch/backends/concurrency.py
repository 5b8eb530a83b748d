"""How many Bedrock calls a batch may keep in flight, derived from the model's quota.

Pure arithmetic, so the plan is the same in ingest, in tests and in the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from imagebatch.models.bedrock_models import ModelQuota

# Plan for this share of the quota: other callers in the account, retries after a throttle
# and latency spread all eat into it.
DEFAULT_HEADROOM = 0.8


class ConcurrencyPlan(BaseModel):
    model_config = ConfigDict(frozen=True)
    in_flight: int = Field(ge=1, description="Bedrock calls the quota sustains at once.")
    map_max_concurrency: int = Field(ge=1, description="Chunks the Distributed Map runs at once.")
    chunk_concurrency: int = Field(ge=1, description="Calls in flight inside one chunk.")


def sustainable_in_flight(throughput: ModelQuota, headroom: float = DEFAULT_HEADROOM) -> int:
    """Little's law: calls in flight = rate x time per call. At Q images/min and L seconds per
    image, Q*L/60 calls in flight use the whole quota; plan for `headroom` of it, at least 1.
    """
    return max(
        1, math.floor(throughput.images_per_minute * throughput.seconds_per_image / 60 * headroom)
    )


def plan_concurrency(
    throughputs: Iterable[ModelQuota],
    *,
    chunks: int,
    max_map_concurrency: int,
    max_chunk_concurrency: int,
    headroom: float = DEFAULT_HEADROOM,
) -> ConcurrencyPlan:
    """Split the quota's calls in flight between the Map and the chunks.

    A batch mixing models is planned for its tightest one. Chunks are spread first (more
    chunks at once means fewer images waiting behind one slow chunk), then each chunk gets an
    equal share; map x chunk never exceeds the sustainable calls in flight, so the batch does
    not throttle itself by design. The configured maxima are ceilings, never raised.
    """
    if chunks < 1 or max_map_concurrency < 1 or max_chunk_concurrency < 1:
        raise ValueError("chunks and both maxima must be at least 1")
    if not 0 < headroom <= 1:
        raise ValueError("headroom must be within (0, 1]")
    budgets = [sustainable_in_flight(t, headroom) for t in throughputs]
    if not budgets:
        raise ValueError("no model to plan for")
    in_flight = min(budgets)
    map_max = max(1, min(max_map_concurrency, chunks, math.ceil(in_flight / max_chunk_concurrency)))
    chunk = max(1, min(max_chunk_concurrency, in_flight // map_max))
    return ConcurrencyPlan(
        in_flight=in_flight, map_max_concurrency=map_max, chunk_concurrency=chunk
    )
