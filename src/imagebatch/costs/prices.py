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


class InstancePrice(BaseModel):
    model_config = ConfigDict(frozen=True)
    instance_type: str
    accelerator: str
    usd_per_hour: Decimal
    source: str
    retrieved: date

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


@lru_cache(maxsize=1)
def load_aws_prices() -> AwsPrices:
    text = resources.files("imagebatch.data").joinpath("aws_prices.json").read_text("utf-8")
    return AwsPrices.model_validate(json.loads(text))
