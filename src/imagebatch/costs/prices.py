"""AWS service and SageMaker instance prices, read from a data file with a source per price."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict

from imagebatch.models.money import MICRO


class ServicePrice(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    usd: Decimal
    unit: str
    source: str
    retrieved: date
    # False: not read from the source for this region; the source says how it was obtained.
    confirmed: bool = True
    # What confirmed it and when ("pricing:GetProducts 2026-12-07"), by `prices refresh`.
    confirmed_by: str | None = None


class InstancePrice(BaseModel):
    model_config = ConfigDict(frozen=True)
    instance_type: str
    accelerator: str
    usd_per_hour: Decimal
    source: str
    retrieved: date
    confirmed: bool = True
    confirmed_by: str | None = None

    @property
    def micro_usd_per_second(self) -> Decimal:
        """Exact, unrounded: callers round once, after multiplying by the seconds used."""
        return self.usd_per_hour * MICRO / 3600


class RegionPrices(BaseModel):
    model_config = ConfigDict(frozen=True)
    services: tuple[ServicePrice, ...]
    sagemaker_instances: tuple[InstancePrice, ...]

    def service(self, name: str) -> ServicePrice:
        for price in self.services:
            if price.name == name:
                return price
        raise KeyError(f"no price for {name!r}; known: {[p.name for p in self.services]}")

    def find_instance(self, instance_type: str) -> InstancePrice | None:
        return next((p for p in self.sagemaker_instances if p.instance_type == instance_type), None)

    def instance(self, instance_type: str) -> InstancePrice:
        for price in self.sagemaker_instances:
            if price.instance_type == instance_type:
                return price
        known = [p.instance_type for p in self.sagemaker_instances]
        raise KeyError(f"no price for instance {instance_type!r}; known: {known}")


class AwsPrices(BaseModel):
    model_config = ConfigDict(frozen=True)
    about: str
    regions: dict[str, RegionPrices]

    def region(self, name: str) -> RegionPrices:
        try:
            return self.regions[name]
        except KeyError:
            raise KeyError(
                f"no prices recorded for region {name!r}; known: {sorted(self.regions)}"
            ) from None

    def find(self, name: str) -> RegionPrices | None:
        """The region's prices, or None where imagebatch has none (it cannot run there)."""
        return self.regions.get(name)

    def unsupported_region_reason(self, name: str) -> str | None:
        """Why a stack in region `name` cannot run batches, or None if it can."""
        if name in self.regions:
            return None
        known = ", ".join(sorted(self.regions))
        return (
            f"this stack is in {name}, where imagebatch has no AWS prices to count a batch's "
            f"cost with (src/imagebatch/data/aws_prices.json has {known}): nothing runs; "
            "deploy in one of those regions or add the region's prices"
        )


@lru_cache(maxsize=1)
def load_aws_prices() -> AwsPrices:
    text = resources.files("imagebatch.data").joinpath("aws_prices.json").read_text("utf-8")
    return AwsPrices.model_validate(json.loads(text))
