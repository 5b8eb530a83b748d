"""Function settings, validated once from the environment and passed down.

This is the only module in the package that reads os.environ; handlers load one of these
settings models through `cached_settings` and pass what it holds down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

# Every function's environment names the Powertools service (template.yaml Globals), and a
# module's `Logger(child=True)` binds to the service named when it is imported. A process that
# imports this package before such an environment is set (the CLI, which runs the handlers
# in-process; the tests) would otherwise bind those loggers to "service_undefined", whose
# lines never reach the functions' JSON handler: the template's name is the default here
# (imagebatch/__init__.py imports this module first).
SERVICE_NAME = "imagebatch"
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", SERVICE_NAME)

# The longest an endpoint request may wait in SageMaker's queue (SubmitChunk's setting may
# not exceed it: the heartbeat covers it) and the longest it may then run (SageMaker's own
# InvocationTimeoutSeconds limit): finalize waits this long at most for a request's result.
MAX_REQUEST_TTL_S = 3_000
MAX_INVOCATION_TIMEOUT_S = 3_600


class _EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(dict(os.environ if environ is None else environ))


SettingsT = TypeVar("SettingsT", bound=_EnvSettings)


def cached_settings(settings_type: type[SettingsT]) -> Callable[[], SettingsT]:
    """A handler module's settings loader.

    It reads the environment on its first call, not at import, so the local runtime and tests
    can set the environment after loading a handler; then it keeps what it read for the life
    of the execution environment. Each loader caches on its own, so a handler module loaded
    again (as the local runtime does per stack) reads the environment again.
    """

    @lru_cache(maxsize=1)
    def load() -> SettingsT:
        return settings_type.from_env()

    return load


class StorageSettings(_EnvSettings):
    data_bucket: str = Field(alias="DATA_BUCKET", min_length=3)
    ledger_table: str = Field(alias="LEDGER_TABLE", min_length=3)
    # Prices are per region (data/aws_prices.json); the Lambda runtime sets AWS_REGION.
    aws_region: str = Field(alias="AWS_REGION", default="us-east-1")


class QuerySettings(StorageSettings):
    # Stack parameter QueryTenancy (api/tenancy.py): off, every caller reads every batch.
    query_tenancy: bool = Field(alias="QUERY_TENANCY", default=False)
    tenancy_principal_tag: str = Field(alias="TENANCY_PRINCIPAL_TAG", default="imagebatch:team")
    tenancy_batch_tag: str = Field(alias="TENANCY_BATCH_TAG", default="team")


class FinalizeSettings(StorageSettings):
    # The stack's own bus (template.yaml BatchEventBus), never the default one: its policy is
    # what keeps other principals from forging "Batch Finished".
    event_bus_name: str = Field(alias="EVENT_BUS_NAME", min_length=1)


class IngestSettings(StorageSettings):
    state_machine_arn: str = Field(alias="STATE_MACHINE_ARN", pattern=r"^arn:aws[a-z-]*:states:")
    # At most 90 images per chunk so a chunk's ledger commit fits one DynamoDB transaction.
    chunk_size: int = Field(alias="CHUNK_SIZE", default=50, ge=1, le=90)
    map_max_concurrency: int = Field(alias="MAP_MAX_CONCURRENCY", default=10, ge=1, le=1000)
    # The ceiling for each chunk's share of the quota (GenerateSettings reads the same value).
    chunk_concurrency: int = Field(alias="CHUNK_CONCURRENCY", default=50, ge=1, le=90)
    # The chunk function's memory: what the estimate and budget holdback price chunk Lambda
    # time with.
    chunk_memory_mb: int = Field(alias="CHUNK_MEMORY_MB", default=256, ge=128, le=10240)
    # Capped by default (the template's DefaultMaxCostUsd, MaxCostCeilingUsd,
    # MaxImagesPerBatch); None where an environment predates them: no stack limit.
    default_max_cost_usd: Decimal | None = Field(alias="DEFAULT_MAX_COST_USD", default=None, gt=0)
    max_cost_ceiling_usd: Decimal | None = Field(alias="MAX_COST_CEILING_USD", default=None, gt=0)
    max_images_per_batch: int | None = Field(alias="MAX_IMAGES_PER_BATCH", default=None, ge=1)
    # What the stack deployed on the SageMaker side (its template parameters); the endpoint
    # name is empty when the stack has none (EnableSageMaker=false): `backend: auto` then
    # chooses Bedrock, and a sagemaker batch is refused.
    sagemaker_endpoint_name: str = Field(alias="SAGEMAKER_ENDPOINT_NAME", default="")
    sagemaker_shape_buckets: str = Field(alias="SAGEMAKER_SHAPE_BUCKETS", default="")
    sagemaker_instance_type: str = Field(alias="SAGEMAKER_INSTANCE_TYPE", default="ml.inf2.xlarge")
    sagemaker_model_id: str = Field(alias="SAGEMAKER_MODEL_ID", default="")
    sagemaker_max_batch: int = Field(alias="SAGEMAKER_MAX_BATCH", default=4, ge=1, le=64)
    # Bedrock model ids the endpoint may make instead under `backend: auto`, comma-separated.
    sagemaker_bedrock_equivalents: str = Field(alias="SAGEMAKER_BEDROCK_EQUIVALENTS", default="")
    # The stack's ReuseImages: images already made are left out of the estimate and the hold
    # (the chunks copy them); off, ingest does not look them up.
    reuse_images: bool = Field(alias="REUSE_IMAGES", default=True)

    @property
    def sagemaker_stands_in_for(self) -> frozenset[str]:
        return frozenset(
            m.strip() for m in self.sagemaker_bedrock_equivalents.split(",") if m.strip()
        )


class GenerateSettings(StorageSettings):
    chunk_concurrency: int = Field(alias="CHUNK_CONCURRENCY", default=50, ge=1, le=90)

    # Stop starting new images when less than this much of the invocation is left, so the
    # chunk can still commit what it made before Lambda's timeout.
    commit_reserve_ms: int = Field(alias="COMMIT_RESERVE_MS", default=20_000, ge=1_000)
    # Backoff for throttled/unavailable Bedrock calls: full jitter up to base*2^n, capped.
    retry_base_ms: int = Field(alias="RETRY_BASE_MS", default=500, ge=1)
    retry_cap_ms: int = Field(alias="RETRY_CAP_MS", default=20_000, ge=1)
    retry_max_attempts: int = Field(alias="RETRY_MAX_ATTEMPTS", default=8, ge=1, le=50)
    # The stack's ReuseImages: copy an image some batch already made instead of making it.
    reuse_images: bool = Field(alias="REUSE_IMAGES", default=True)
    # A model's first use subscribes the account (AWS Marketplace): Bedrock may answer
    # AccessDenied for about 2 minutes; wait that out this long, asking every poll.
    access_wait_ms: int = Field(alias="ACCESS_WAIT_MS", default=150_000, ge=0, le=600_000)
    access_poll_ms: int = Field(alias="ACCESS_POLL_MS", default=10_000, ge=1)
    # "model id=profile ARN,...": this stack's application inference profiles (cost-allocation
    # tags), used as the modelId of the models they copy; empty: the bare model ids.
    inference_profiles: str = Field(alias="BEDROCK_INFERENCE_PROFILES", default="")

    @property
    def inference_profile_arns(self) -> dict[str, str]:
        pairs = (entry.split("=", 1) for entry in self.inference_profiles.split(",") if entry)
        return {model.strip(): arn.strip() for model, arn in pairs}


class SageMakerSettings(StorageSettings):
    """What the SageMaker path's functions price the endpoint's work with."""

    endpoint_name: str = Field(alias="SAGEMAKER_ENDPOINT_NAME", min_length=1)
    instance_type: str = Field(alias="SAGEMAKER_INSTANCE_TYPE", min_length=1)
    # The model the endpoint serves (records and measured throughput carry it); empty: the
    # images' own model ids.
    model_id: str = Field(alias="SAGEMAKER_MODEL_ID", default="")
    # Images per pipeline call (the compiled batch size on Neuron).
    max_batch: int = Field(alias="SAGEMAKER_MAX_BATCH", default=4, ge=1, le=64)
    # The compile and sizes the endpoint was deployed with: part of its images' identities.
    model_data_key: str = Field(alias="SAGEMAKER_MODEL_DATA_KEY", default="")
    shape_buckets: str = Field(alias="SAGEMAKER_SHAPE_BUCKETS", default="")
    # A budget hold covers this many times the chunk's expected instance-seconds.
    hold_factor: Decimal = Field(alias="SAGEMAKER_HOLD_FACTOR", default=Decimal(2), ge=1, le=10)
    # RecordResult's MemorySize and Timeout in template.yaml: a budget hold bounds its run.
    record_memory_mb: int = Field(alias="RECORD_RESULT_MEMORY_MB", default=256, ge=128)
    record_timeout_s: int = Field(alias="RECORD_RESULT_TIMEOUT_S", default=30, ge=1, le=900)


class SubmitChunkSettings(SageMakerSettings):
    # The stack's ReuseImages: a chunk's images already made are copied, not sent.
    reuse_images: bool = Field(alias="REUSE_IMAGES", default=True)
    # SageMaker drops a request that waited this long in its queue (cold start included). A
    # queued request gets no heartbeat, so the TTL plus the first pipeline call (after which
    # the container heartbeats) stays within SubmitChunk's HeartbeatSeconds (3,600 s): a
    # request is never submitted again while the first may still run. With the hour of
    # processing it stays within the task's TimeoutSeconds too.
    request_ttl_s: int = Field(
        alias="SAGEMAKER_REQUEST_TTL_S", default=3_000, ge=60, le=MAX_REQUEST_TTL_S
    )
    invocation_timeout_s: int = Field(
        alias="SAGEMAKER_INVOCATION_TIMEOUT_S", default=3_600, ge=1, le=MAX_INVOCATION_TIMEOUT_S
    )


class RecordResultSettings(SageMakerSettings):
    # The stack's result topics, comma-separated: a notification from any other is dropped.
    result_topics: str = Field(alias="INFERENCE_RESULT_TOPICS", min_length=1)

    @property
    def result_topic_arns(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.result_topics.split(",") if t.strip())


class EndpointObserverSettings(_EnvSettings):
    """The endpoint whose instance time the observer records, and what it is priced at."""

    ledger_table: str = Field(alias="LEDGER_TABLE", min_length=3)
    aws_region: str = Field(alias="AWS_REGION", default="us-east-1")
    endpoint_name: str = Field(alias="SAGEMAKER_ENDPOINT_NAME", min_length=1)
    instance_type: str = Field(alias="SAGEMAKER_INSTANCE_TYPE", min_length=1)
    # A window that closed this recently is left for the next run: a result still in the
    # SQS queue is recorded first, or its seconds would be counted as idle.
    settle_s: int = Field(alias="OBSERVER_SETTLE_S", default=120, ge=0, le=3600)
