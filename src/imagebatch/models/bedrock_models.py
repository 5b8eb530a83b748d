"""The Bedrock model catalogue: model ids, limits, sizes and prices, read from a data file."""

from __future__ import annotations

import json
import math
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imagebatch.models.money import MICRO


class Lifecycle(BaseModel):
    model_config = ConfigDict(frozen=True)
    status: Literal["active", "legacy"]
    end_of_life: date | None = None
    replacement: str | None = None
    source: str | None = None
    confirmed_by: str | None = None  # "bedrock:ListFoundationModels <date>", by `prices refresh`


class RegionAvailability(BaseModel):
    """Where Bedrock serves a model on demand (InvokeModel with the bare model id)."""

    model_config = ConfigDict(frozen=True)
    regions: tuple[str, ...] = Field(min_length=1)
    # Cross-Region inference profile ids (e.g. "us.<model id>"); none recorded for these.
    inference_profiles: tuple[str, ...] = ()
    source: str
    retrieved: date
    # False: not read from AWS documentation; the source says where it comes from.
    confirmed: bool = True
    note: str | None = None


class ModelLimits(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt_max_chars: int
    negative_prompt_max_chars: int
    seed_min: int
    seed_max: int
    images_per_request: int
    takes_steps: bool
    takes_guidance: bool
    # Amazon models take cfgScale in a narrower range than the manifest's generic 0-35.
    guidance_min: float | None = None
    guidance_max: float | None = None
    guidance_default: float | None = None
    qualities: tuple[str, ...] = ("standard",)


class ImageSize(BaseModel):
    model_config = ConfigDict(frozen=True)
    width: int
    height: int
    aspect_ratio: str


class SizeRule(BaseModel):
    """Models that take any size within bounds (Nova Canvas) rather than a fixed list."""

    model_config = ConfigDict(frozen=True)
    min_side: int
    max_side: int
    multiple_of: int
    max_pixels: int
    max_aspect_ratio: float

    def allows(self, width: int, height: int) -> bool:
        sides_ok = all(
            self.min_side <= side <= self.max_side and side % self.multiple_of == 0
            for side in (width, height)
        )
        ratio = max(width, height) / min(width, height)
        return sides_ok and width * height <= self.max_pixels and ratio <= self.max_aspect_ratio


class ModelQuota(BaseModel):
    """The images-per-minute quota a batch must stay under, and one call's typical latency."""

    model_config = ConfigDict(frozen=True)
    images_per_minute: int = Field(ge=1)
    seconds_per_image: float = Field(gt=0)
    source: str


class Price(BaseModel):
    model_config = ConfigDict(frozen=True)
    tier: str
    usd_per_image: Decimal
    source: str
    retrieved: date
    # A tier applies to images of this quality up to max_pixels (None: any size).
    quality: str = "standard"
    max_pixels: int | None = None
    # What confirmed the price and when ("pricing:GetProducts 2026-12-07"), by `prices refresh`.
    confirmed_by: str | None = None

    @property
    def micro_usd_per_image(self) -> int:
        return int(self.usd_per_image * MICRO)


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    model_id: str
    name: str
    provider: str
    request_family: Literal["stability", "amazon"]
    lifecycle: Lifecycle
    availability: RegionAvailability
    limits: ModelLimits
    sizes: tuple[ImageSize, ...]
    prices: tuple[Price, ...]
    docs: str
    size_rule: SizeRule | None = None
    throughput: ModelQuota = ModelQuota(
        images_per_minute=60, seconds_per_image=8.0, source="imagebatch default"
    )

    def size(self, width: int, height: int) -> ImageSize | None:
        for size in self.sizes:
            if size.width == width and size.height == height:
                return size
        if self.size_rule is not None and self.size_rule.allows(width, height):
            divisor = math.gcd(width, height)
            return ImageSize(
                width=width, height=height, aspect_ratio=f"{width // divisor}:{height // divisor}"
            )
        return None

    def describe_sizes(self) -> str:
        listed = ", ".join(f"{size.width}x{size.height}" for size in self.sizes)
        rule = self.size_rule
        if rule is None:
            return listed
        return (
            f"{listed}, or any size with sides {rule.min_side}-{rule.max_side} px in steps of "
            f"{rule.multiple_of}, at most {rule.max_pixels} pixels and aspect ratio "
            f"{rule.max_aspect_ratio:g}:1"
        )

    def price_for(self, width: int, height: int, quality: str = "standard") -> Price:
        """The tier an image of this size and quality is billed at.

        The smallest tier that covers the pixels; an image larger than every tier is billed at
        the largest (over-estimating is safe for a budget, under-estimating is not).
        """
        tiers = [p for p in self.prices if p.quality == quality] or list(self.prices)
        pixels = width * height
        covering = [p for p in tiers if p.max_pixels is None or p.max_pixels >= pixels]
        if covering:
            return min(covering, key=lambda p: (p.max_pixels or math.inf, p.usd_per_image))
        return max(tiers, key=lambda p: p.usd_per_image)

    def price(self, tier: str = "standard") -> Price:
        for price in self.prices:
            if price.tier == tier:
                return price
        raise KeyError(f"{self.model_id} has no price for tier {tier!r}")

    def region_error(self, region: str) -> str | None:
        """Why this model cannot run in `region`, naming the regions that serve it."""
        if region in self.availability.regions:
            return None
        return (
            f"{self.model_id} is not served in {region}, the stack's region; regions that "
            f"serve it: {', '.join(self.availability.regions)} (deploy there, or choose a "
            "model this region serves)"
        )

    def is_retired(self, today: date) -> bool:
        eol = self.lifecycle.end_of_life
        return eol is not None and today > eol


class ModelCatalogue(BaseModel):
    model_config = ConfigDict(frozen=True)
    about: str
    models: tuple[ModelSpec, ...]

    def get(self, model_id: str) -> ModelSpec | None:
        for spec in self.models:
            if spec.model_id == model_id:
                return spec
        return None

    @property
    def default_model_id(self) -> str:
        return self.models[0].model_id

    @property
    def model_ids(self) -> list[str]:
        return [spec.model_id for spec in self.models]


@lru_cache(maxsize=1)
def load_catalogue() -> ModelCatalogue:
    raw = resources.files("imagebatch").joinpath("data/bedrock_models.json").read_text("utf-8")
    return ModelCatalogue.model_validate(json.loads(raw))
