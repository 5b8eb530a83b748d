"""The self-hosted endpoint's part of an image's identity (models/identity.py, docs/reuse.md):
what the endpoint runs decides the pixels as much as the prompt does, so its model, its
compile (the model.tar.gz it loaded, and the batch size Neuron compiled it for) and its shape
buckets all count. Redeploying with another compile or other buckets makes every identity new:
no image of the old build passes for one of the new.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagebatch.models.identity import image_identity
from imagebatch.models.records import ImageJob

# Bumped when how a job becomes the endpoint's request changes what it makes
# (models/sagemaker_contract.py, containers/serving).
ENDPOINT_REQUEST_VERSION = 1


@dataclass(frozen=True)
class EndpointModel:
    """What the deployed endpoint runs, from the stack's parameters."""

    # The model it serves (SageMakerModelId); empty: each image's own model id.
    model_id: str
    # The compile: the model.tar.gz key (SageMakerModelDataKey) and the compiled batch size.
    model_data: str
    max_batch: int
    # SageMakerShapeBuckets as deployed ("" on a GPU endpoint that takes any size).
    shape_buckets: str

    def identity(self, job: ImageJob) -> str:
        return image_identity(
            job,
            backend="sagemaker",
            backend_model={
                "model_id": self.model_id or job.model,
                "model_data": self.model_data,
                "max_batch": str(self.max_batch),
                "shape_buckets": self.shape_buckets,
            },
            request_family="sagemaker-async",
            family_version=ENDPOINT_REQUEST_VERSION,
        )
