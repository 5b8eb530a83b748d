"""The composition root: every adapter a handler passes to its use case, built from settings.

Handlers (functions/*/app.py) parse their event, load their settings, ask this module for the
adapters and call one use case; nothing else in the package builds an adapter.

What is worth keeping for the life of an execution environment is built once: the boto3
clients (`aws.clients`, cached with their connection pools), the prices and the model
catalogue (parsed once from the data files, cached where they are loaded). The adapters
around them are built per invocation, which costs a few attribute assignments: the ledger's
and the store's meters count one invocation's requests, which its commit charges to the
batch, so an adapter kept from one invocation to the next would charge a batch for another
batch's reads. Nothing here runs at import: a handler module is loaded before its environment
is set (the tests, the local runtime), and the local AWS checks every call against the
function's role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# The client factories are looked up on their module at each call, not imported by name: a
# test or the local AWS that replaces a factory (a stubbed Bedrock client) reaches every handler.
from imagebatch.aws import clients
from imagebatch.aws.bedrock_runtime import BedrockImageBackend, CallDeadline
from imagebatch.aws.catalog_state import CatalogState
from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.events import EventBus
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.ledger_queries import LedgerQueries
from imagebatch.aws.principal_tags import PrincipalTags
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.sagemaker_endpoints import EndpointInstances
from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.aws.stepfunctions import StepFunctionsStarter, TaskTokens
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.backends.endpoint import EndpointModel
from imagebatch.backends.retry import AccessWait, BackoffPolicy
from imagebatch.costs.prices import RegionPrices, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.models.bedrock_models import ModelCatalogue, load_catalogue
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.settings import (
    FinalizeSettings,
    GenerateSettings,
    IngestSettings,
    SageMakerSettings,
    StorageSettings,
    SubmitChunkSettings,
)


class _Regional(Protocol):
    """Settings that name the region (every function's: prices are per region)."""

    @property
    def aws_region(self) -> str: ...


class _WithLedger(Protocol):
    """Settings that name the ledger table."""

    @property
    def ledger_table(self) -> str: ...


class _WithEndpoint(_Regional, _WithLedger, Protocol):
    """Settings of a function that looks at the SageMaker endpoint."""

    @property
    def endpoint_name(self) -> str: ...

    @property
    def instance_type(self) -> str: ...


# --- built once per execution environment (cached where they are loaded) --------------------


def prices(settings: _Regional) -> RegionPrices:
    """The function's region's prices (data/aws_prices.json, parsed once)."""
    return load_aws_prices().region(settings.aws_region)


def catalogue() -> ModelCatalogue:
    """The Bedrock model catalogue (data/bedrock_models.json, parsed once)."""
    return load_catalogue()


# --- built per invocation, around the cached clients -----------------------------------------


def ledger(settings: _WithLedger) -> Ledger:
    """The cost ledger, with a fresh meter: what this invocation reads and writes."""
    return Ledger(clients.dynamodb_client(), settings.ledger_table)


def store(settings: StorageSettings, bucket: str | None = None) -> BatchStore:
    """The batch's bucket (the event's where it names one, else the data bucket), metered."""
    return BatchStore(clients.s3_client(), settings.data_bucket if bucket is None else bucket)


def endpoint_throughput(ledger: Ledger) -> EndpointThroughput:
    """The endpoint's measured throughput; its reads and writes count on `ledger`'s meter."""
    return ledger.beside(EndpointThroughput)


def endpoint_usage(ledger: Ledger) -> EndpointUsageStore:
    """The endpoint's usage items; their reads count on `ledger`'s meter."""
    return ledger.beside(EndpointUsageStore)


def observer_usage(settings: _WithLedger) -> EndpointUsageStore:
    """The endpoint's usage items for the observer, which charges no batch for its reads."""
    return EndpointUsageStore(clients.dynamodb_client(), settings.ledger_table)


def endpoint_instances(settings: _WithEndpoint) -> EndpointInstances:
    return EndpointInstances(clients.sagemaker_client(), settings.endpoint_name)


def catalog_state(settings: _WithLedger) -> CatalogState:
    return CatalogState(clients.dynamodb_client(), settings.ledger_table)


def ledger_queries(settings: _WithLedger) -> LedgerQueries:
    return LedgerQueries(clients.dynamodb_client(), settings.ledger_table)


def principal_tags() -> PrincipalTags:
    return PrincipalTags(clients.iam_client())


def task_tokens() -> TaskTokens:
    return TaskTokens(clients.sfn_client())


def starter(settings: IngestSettings) -> StepFunctionsStarter:
    return StepFunctionsStarter(clients.sfn_client(), settings.state_machine_arn)


def event_bus(settings: FinalizeSettings) -> EventBus:
    return EventBus(clients.events_client(), settings.event_bus_name)


def bedrock_backend(
    settings: GenerateSettings,
    *,
    time_left_ms: Callable[[], int] | None = None,
    reserve_ms: int = 0,
) -> BedrockImageBackend:
    """The Bedrock backend, invoking each model by the stack's inference profile where it has
    one (its spend carries the stack's cost-allocation tags); with `time_left_ms` (the
    invocation's), no call outlives the commit reserve: calls near it get a client bounded by
    the time left."""
    deadline = None
    if time_left_ms is not None:
        deadline = CallDeadline(time_left_ms, reserve_ms, clients.bedrock_runtime_client_within)
    return BedrockImageBackend(
        clients.bedrock_runtime_client(), catalogue(), settings.inference_profile_arns, deadline
    )


def retry_policy(settings: GenerateSettings) -> BackoffPolicy:
    """Backoff for throttled Bedrock calls; a cap below the base means the base."""
    return BackoffPolicy(
        base_s=settings.retry_base_ms / 1000,
        cap_s=max(settings.retry_cap_ms, settings.retry_base_ms) / 1000,
        max_attempts=settings.retry_max_attempts,
    )


def access_wait(settings: GenerateSettings) -> AccessWait:
    """How long a model's first-use AccessDenied is waited out (Marketplace subscribing)."""
    return AccessWait(
        window_s=settings.access_wait_ms / 1000, poll_s=settings.access_poll_ms / 1000
    )


def async_endpoint(settings: SubmitChunkSettings) -> AsyncEndpoint:
    return AsyncEndpoint(
        clients.sagemaker_runtime_client(),
        settings.endpoint_name,
        request_ttl_s=settings.request_ttl_s,
        invocation_timeout_s=settings.invocation_timeout_s,
    )


def endpoint_costing(
    settings: SageMakerSettings, ledger: Ledger, *, submit_memory_mb: int = 512
) -> EndpointCosting:
    """What prices the endpoint's work (both SageMaker functions); its throughput reads and
    writes count on `ledger`'s meter."""
    region = prices(settings)
    return EndpointCosting(
        endpoint_name=settings.endpoint_name,
        price=region.instance(settings.instance_type),
        prices=region,
        path=SageMakerPath(
            submit_memory_mb=submit_memory_mb,
            record_memory_mb=settings.record_memory_mb,
            record_timeout_s=settings.record_timeout_s,
            max_batch=settings.max_batch,
            hold_factor=settings.hold_factor,
        ),
        throughput=endpoint_throughput(ledger),
        model=settings.model_id,
        endpoint_model=EndpointModel(
            model_id=settings.model_id,
            model_data=settings.model_data_key,
            max_batch=settings.max_batch,
            shape_buckets=settings.shape_buckets,
        ),
    )
