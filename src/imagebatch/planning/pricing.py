"""Expected micro-dollars per image on each backend, exact (a plan rounds its total up once)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Protocol

from imagebatch.backends.routing import Backend, Deployment, job_for_backend
from imagebatch.backends.routing import EndpointSeconds as EndpointSecondsFn
from imagebatch.costs.sagemaker_seconds import Measured, expected_seconds
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import shape_key


class MeasuredThroughput(Protocol):
    """The endpoint's own measured speeds per call shape (aws.throughput.EndpointThroughput
    reads them from the ledger table); declared here because planning imports nothing of aws/."""

    def measured(
        self, endpoint: str, model: str, keys: Iterable[str]
    ) -> Mapping[str, Measured]: ...


class ImagePricer:
    """Expected micro-dollars per image (exact): the catalogue price on Bedrock; on the
    endpoint, its expected seconds x the instance price."""

    def __init__(
        self,
        catalogue: ModelCatalogue,
        deployment: Deployment | None,
        endpoint_seconds: EndpointSecondsFn | None,
    ) -> None:
        self._catalogue = catalogue
        self._deployment = deployment
        self._endpoint_seconds = endpoint_seconds
        self._bedrock: dict[tuple[str, int, int], int] = {}

    def bedrock(self, job: ImageJob) -> Decimal:
        shape = (job.model, job.width, job.height)
        if shape not in self._bedrock:
            spec = self._catalogue.get(job.model)
            self._bedrock[shape] = (
                spec.price_for(job.width, job.height).micro_usd_per_image if spec else 0
            )
        return Decimal(self._bedrock[shape])

    def endpoint_seconds(self, job: ImageJob) -> Decimal:
        deployment = self._deployment
        if deployment is None:
            return Decimal(0)
        job = job_for_backend(job, "sagemaker", deployment)
        if self._endpoint_seconds is not None:
            return self._endpoint_seconds(job)
        return expected_seconds(
            [shape_key(job)], instance_type=deployment.instance_type, model=job.model, measured={}
        ).for_job(job)

    def price(self, job: ImageJob, backend: Backend) -> Decimal:
        if backend == "bedrock":
            return self.bedrock(job)
        if self._deployment is None:
            return Decimal(0)
        return self.endpoint_seconds(job) * self._deployment.price.micro_usd_per_second


class EndpointSeconds:
    """Expected seconds per image on the deployed endpoint: its own measured mean for a shape
    it has served (read once per shape), else the data file's reference figure."""

    def __init__(
        self, throughput: MeasuredThroughput, endpoint: str, instance_type: str, model: str
    ) -> None:
        self._throughput = throughput
        self._endpoint = endpoint
        self._instance_type = instance_type
        self._model = model
        self._seconds: dict[tuple[str, str], Decimal] = {}

    def __call__(self, job: ImageJob) -> Decimal:
        model = self._model or job.model
        key = shape_key(job)
        if (model, key) not in self._seconds:
            expected = expected_seconds(
                [key],
                instance_type=self._instance_type,
                model=model,
                measured=self._throughput.measured(self._endpoint, model, [key]),
            )
            self._seconds[(model, key)] = expected.per_image[key]
        return self._seconds[(model, key)]
