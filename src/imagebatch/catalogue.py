"""The Bedrock model catalogue: model ids, limits, sizes and prices, read from a data file."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict

MICRO = Decimal(1_000_000)


class Lifecycle(BaseModel):
    model_config = ConfigDict(frozen=True)
    status: Literal["active", "legacy"]
    end_of_life: date | None = None
    replacement: str | None = None


class ModelLimits(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt_max_chars: int
    negative_prompt_max_chars: int
    seed_min: int
    seed_max: int
    images_per_request: int
    takes_steps: bool
    takes_guidance: bool


class ImageSize(BaseModel):
    model_config = ConfigDict(frozen=True)
    width: int
    height: int
    aspect_ratio: str


class Price(BaseModel):
    model_config = ConfigDict(frozen=True)
    tier: str
    usd_per_image: Decimal
    source: str
    retrieved: date

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
    limits: ModelLimits
    sizes: tuple[ImageSize, ...]
    prices: tuple[Price, ...]
    docs: str

    def size(self, width: int, height: int) -> ImageSize | None:
        for size in self.sizes:
            if size.width == width and size.height == height:
                return size
        return None

    def price(self, tier: str = "standard") -> Price:
        for price in self.prices:
            if price.tier == tier:
                return price
        raise KeyError(f"{self.model_id} has no price for tier {tier!r}")

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
