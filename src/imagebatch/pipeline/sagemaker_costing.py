"""What both SageMaker use cases (sagemaker_submit, sagemaker_result) price the endpoint's
work with; `imagebatch.wiring.endpoint_costing` builds it from a function's settings."""

from __future__ import annotations

from dataclasses import dataclass

from imagebatch.aws.ports import ThroughputPort
from imagebatch.backends.endpoint import EndpointModel
from imagebatch.costs.prices import InstancePrice, RegionPrices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.models.records import ImageJob


@dataclass(frozen=True)
class EndpointCosting:
    """What prices the endpoint's work: the deployed instance and model, region prices, the
    path's functions, and the endpoint's measured throughput."""

    endpoint_name: str
    price: InstancePrice
    prices: RegionPrices
    path: SageMakerPath
    throughput: ThroughputPort
    # The model the endpoint serves; empty: each image's own model id.
    model: str = ""
    # What the endpoint runs, for its images' identities (reuse); None: they have none, so
    # they are neither indexed nor looked up.
    endpoint_model: EndpointModel | None = None

    def model_for(self, job: ImageJob) -> str:
        return self.model or job.model

    def identity(self, job: ImageJob) -> str | None:
        return self.endpoint_model.identity(job) if self.endpoint_model else None
