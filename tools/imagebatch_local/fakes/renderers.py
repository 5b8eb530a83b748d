"""What the local Bedrock asks a renderer for, and the renderer that costs nothing.

Two renderers answer the local Bedrock (`imagebatch local run --renderer tiny|null`):

- `tiny` (fakes/tiny_model.ImageRenderer): the tiny random-weight diffusers model, through the
  serving container's DiffusersBackend; needs torch.
- `null` (NullRenderer): the serving container's NullBackend, a flat image of the requested
  size coloured by its seed, PNG-encoded like any other: no torch, no model, tens of
  microseconds an image. For benchmarks of the pipeline itself; images stay decodable and
  seeds stay real (the same seed makes the same image).

This module imports no torch, so a null-renderer run never loads it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from imagebatch_serving.engine import CallShape, encode_png
from imagebatch_serving.null_backend import NullBackend

#: The names `--renderer` takes.
RENDERERS = ("tiny", "null")


@dataclass(frozen=True, slots=True)
class RenderRequest:
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    seed: int
    steps: int = 1
    guidance: float = 0.0

    def __post_init__(self) -> None:
        # The UNet halves the latent per down block; multiples of 8 fit every SD-family model.
        if self.width <= 0 or self.height <= 0 or self.width % 8 or self.height % 8:
            raise ValueError(f"width and height must be positive multiples of 8: {self}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1: {self}")
        if self.seed < 0:
            raise ValueError(f"seed must not be negative: {self}")

    @property
    def call_shape(self) -> CallShape:
        """Requests of one call shape share a pipeline call (the serving engine's rule)."""
        return CallShape(
            width=self.width, height=self.height, steps=self.steps, guidance=self.guidance
        )


@dataclass(frozen=True, slots=True)
class RenderedImage:
    png: bytes
    seed: int
    seconds: float


class Renderer(Protocol):
    """What the local Bedrock calls: one RenderedImage per request, in request order."""

    def render(self, requests: Sequence[RenderRequest]) -> list[RenderedImage]: ...


class NullRenderer:
    """Renders through the serving container's NullBackend: the same backend contract the
    tiny model's ImageRenderer uses, without a model. Thread-safe (no shared state)."""

    def __init__(self) -> None:
        self._backend = NullBackend(max_batch=1)

    def render(self, requests: Sequence[RenderRequest]) -> list[RenderedImage]:
        rendered = []
        for request in requests:
            started = time.perf_counter()
            shape = request.call_shape
            (image,) = self._backend.generate(
                shape, [request.prompt], [request.negative_prompt or ""], [request.seed]
            )
            rendered.append(
                RenderedImage(
                    png=encode_png(image),
                    seed=request.seed,
                    seconds=time.perf_counter() - started,
                )
            )
        return rendered


__all__ = [
    "RENDERERS",
    "NullRenderer",
    "RenderRequest",
    "RenderedImage",
    "Renderer",
]
