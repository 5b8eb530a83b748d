"""Baseline: the tiny model rendering prompts one by one, with no AWS and no orchestration.

The pipeline benchmark divides its own images/s by this number to show what the plumbing
costs. Run: `PYTHONPATH=src:tools python bench/bare_pipeline.py [COUNT] [BATCH]`.
"""

from __future__ import annotations

import logging
import sys
import time

from imagebatch_local.fakes.tiny_model import (
    ImageRenderer,
    RenderRequest,
    ensure_tiny_model,
    limit_threads_for_tiny_model,
    load_pipeline,
)


def _requests(prompts: list[str], seeds: list[int], size: int, steps: int) -> list[RenderRequest]:
    return [
        RenderRequest(prompt=p, negative_prompt=None, width=size, height=size, seed=s, steps=steps)
        for p, s in zip(prompts, seeds, strict=True)
    ]


def run_batched(
    prompts: list[str], seeds: list[int], size: int = 64, steps: int = 1, batch: int = 1
) -> float:
    """Seconds to render and PNG-encode every prompt, `batch` images per pipeline call."""
    limit_threads_for_tiny_model()  # as the local pipeline does for the tiny model
    renderer = ImageRenderer(load_pipeline(ensure_tiny_model()), max_batch=batch)
    requests = _requests(prompts, seeds, size, steps)
    # One warm-up call so the first call's allocator and kernel setup is not billed.
    renderer.render(requests[:batch])
    started = time.perf_counter()
    for start in range(0, len(requests), batch):
        renderer.render(requests[start : start + batch])
    return time.perf_counter() - started


def run_bare(prompts: list[str], seeds: list[int], size: int = 64, steps: int = 1) -> float:
    """Seconds to render every prompt at batch 1 through ImageRenderer, PNG encode included."""
    return run_batched(prompts, seeds, size, steps, batch=1)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    count = int(argv[1]) if len(argv) > 1 else 200
    prompts = [f"product photo {i}, studio light" for i in range(count)]
    seeds = list(range(1, count + 1))
    batches = [int(argv[2])] if len(argv) > 2 else [1, 8]
    for batch in batches:
        seconds = run_batched(prompts, seeds, batch=batch)
        print(f"batch {batch}: {count} images in {seconds:.2f} s = {count / seconds:.1f} images/s")


if __name__ == "__main__":
    main(sys.argv)
