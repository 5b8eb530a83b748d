"""A backend that costs nothing: a flat image of the requested size, coloured by its seed.

For benchmarks of everything around the model (the serving app, the async endpoint, the
pipeline): no torch, no model folder, a few tens of microseconds an image. The images are real
images of the asked width and height (the engine PNG-encodes them like any other), and the
same seed always gives the same image, as it does with a model; different seeds give
different colours, so a contact sheet still tells them apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from imagebatch.models.sagemaker_contract import ShapeBucket
from imagebatch_serving.engine import CallShape, StopCheck


def seed_colour(seed: int) -> tuple[int, int, int]:
    """A colour that depends on the seed only (BLAKE2b of its decimal digits)."""
    red, green, blue = hashlib.blake2b(str(seed).encode(), digest_size=3).digest()
    return red, green, blue


def null_image(width: int, height: int, seed: int) -> Image.Image:
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive: {width}x{height}")
    return Image.new("RGB", (width, height), seed_colour(seed))


@dataclass
class NullBackend:
    """The PipelineBackend contract (see engine.py) without a pipeline."""

    max_batch: int = 8
    buckets: tuple[ShapeBucket, ...] = ()
    accelerator: str = "null"

    def generate(
        self,
        shape: CallShape,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | None,
        seeds: Sequence[int],
        should_stop: StopCheck | None = None,
    ) -> list[Image.Image]:
        # One "step" and no time to speak of: there is nothing for should_stop to interrupt.
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts for {len(seeds)} seeds")
        return [null_image(shape.width, shape.height, seed) for seed in seeds]
