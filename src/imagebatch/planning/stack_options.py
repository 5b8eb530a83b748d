"""The options a deployed stack gives ingest (DeployedOptions), read from the ingest
function's settings: not the CLI's `--stack` (tools/imagebatch_cli/deployed_stack.py) nor the local
AWS's stack (tools/imagebatch_local/template.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from imagebatch.backends.routing import Deployment
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import RegionPrices, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.models.sagemaker_contract import parse_buckets
from imagebatch.settings import IngestSettings


@dataclass(frozen=True)
class BatchLimits:
    """What the stack allows one batch, whatever its manifest says (None: no limit)."""

    # The cap of a manifest that sets no max_cost_usd: every batch is capped.
    default_max_cost_usd: Decimal | None = None
    # The highest max_cost_usd a manifest may set: above it is a line error.
    max_cost_ceiling_usd: Decimal | None = None
    max_images_per_batch: int | None = None


@dataclass(frozen=True)
class DeployedOptions:
    """What the stack deployed, from its settings: chunking, concurrency ceilings, prices, and
    the SageMaker endpoint (None: not deployed)."""

    chunk_size: int
    max_concurrency: int
    # None where imagebatch has no prices for the stack's region: every batch is refused.
    prices: RegionPrices | None
    shape: Shape
    max_chunk_concurrency: int = 50
    # The stack's region: Bedrock serves each model in some regions only.
    region: str | None = None
    deployment: Deployment | None = None
    # An endpoint is deployed but its instance type has no price in this region: its
    # batches are refused (their images could not be charged).
    sagemaker_unpriced: bool = False
    # The stack's ReuseImages: whether chunks copy images already made (docs/reuse.md).
    reuse_images: bool = True
    limits: BatchLimits = field(default_factory=BatchLimits)

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> DeployedOptions:
        """The ingest function's settings (the template's parameters, through its
        environment) as options; `imagebatch estimate` builds the same from the template."""
        prices = load_aws_prices().find(settings.aws_region)
        deployment = None
        instance = (
            prices.find_instance(settings.sagemaker_instance_type)
            if prices is not None and settings.sagemaker_endpoint_name
            else None
        )
        if instance is not None:
            deployment = Deployment(
                endpoint_name=settings.sagemaker_endpoint_name,
                price=instance,
                model_id=settings.sagemaker_model_id,
                buckets=parse_buckets(settings.sagemaker_shape_buckets),
                stands_in_for=settings.sagemaker_stands_in_for,
                path=SageMakerPath(max_batch=settings.sagemaker_max_batch),
            )
        return cls(
            chunk_size=settings.chunk_size,
            max_concurrency=settings.map_max_concurrency,
            max_chunk_concurrency=settings.chunk_concurrency,
            prices=prices,
            region=settings.aws_region,
            shape=Shape(
                chunk_size=settings.chunk_size,
                map_concurrency=settings.map_max_concurrency,
                chunk_concurrency=settings.chunk_concurrency,
                chunk_memory_mb=settings.chunk_memory_mb,
            ),
            deployment=deployment,
            sagemaker_unpriced=bool(settings.sagemaker_endpoint_name) and instance is None,
            reuse_images=settings.reuse_images,
            limits=BatchLimits(
                default_max_cost_usd=settings.default_max_cost_usd,
                max_cost_ceiling_usd=settings.max_cost_ceiling_usd,
                max_images_per_batch=settings.max_images_per_batch,
            ),
        )
