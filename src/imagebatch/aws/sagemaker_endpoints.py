"""SageMaker control plane: how many instances the endpoint has, as DescribeEndpoint says."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from imagebatch.costs.overhead import InstanceSample


class SageMakerClient(Protocol):
    """The one call of boto3's `sagemaker` client used here (no type stubs are installed)."""

    def describe_endpoint(self, *, EndpointName: str) -> Mapping[str, Any]: ...


class EndpointInstances:
    def __init__(
        self, client: SageMakerClient, endpoint_name: str, variant: str = "AllTraffic"
    ) -> None:
        self._sagemaker = client
        self.endpoint_name = endpoint_name
        self._variant = variant

    def sample(self, at: datetime) -> InstanceSample:
        """The variant's counts now. DesiredInstanceCount differs from CurrentInstanceCount
        while the endpoint is Updating (a scaling activity in progress); absent, they agree."""
        response = self._sagemaker.describe_endpoint(EndpointName=self.endpoint_name)
        for variant in response.get("ProductionVariants", []):
            if variant["VariantName"] == self._variant:
                current = int(variant.get("CurrentInstanceCount", 0))
                desired = int(variant.get("DesiredInstanceCount", current))
                return InstanceSample(at=at, desired=desired, current=current)
        # An endpoint still being created has no variant summary yet: nothing is serving,
        # but its first instance is being provisioned (InitialInstanceCount) and billed.
        creating = response.get("EndpointStatus") == "Creating"
        return InstanceSample(at=at, desired=1 if creating else 0, current=0)
