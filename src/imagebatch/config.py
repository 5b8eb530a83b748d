"""Function settings, validated once from the environment and passed down.

Domain code never reads os.environ; handlers build one of these at cold start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field


class _EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(dict(os.environ if environ is None else environ))


class StorageSettings(_EnvSettings):
    data_bucket: str = Field(alias="DATA_BUCKET", min_length=3)
    ledger_table: str = Field(alias="LEDGER_TABLE", min_length=3)
    # Prices are per region (data/aws_prices.json); the Lambda runtime sets AWS_REGION.
    aws_region: str = Field(alias="AWS_REGION", default="us-east-1")


class IngestSettings(StorageSettings):
    state_machine_arn: str = Field(alias="STATE_MACHINE_ARN", pattern=r"^arn:aws[a-z-]*:states:")
    # At most 90 images per chunk so a chunk's ledger commit fits one DynamoDB transaction.
    chunk_size: int = Field(alias="CHUNK_SIZE", default=50, ge=1, le=90)
    map_max_concurrency: int = Field(alias="MAP_MAX_CONCURRENCY", default=10, ge=1, le=1000)
    # The chunk function's memory and in-flight calls: what the estimate and budget holdback
    # price chunk Lambda time with.
    chunk_memory_mb: int = Field(alias="CHUNK_MEMORY_MB", default=512, ge=128, le=10240)
    chunk_concurrency: int = Field(alias="CHUNK_CONCURRENCY", default=4, ge=1, le=32)
    # Instance types of a deployed SageMaker endpoint, comma-separated; empty = not deployed,
    # so `backend: auto` chooses among Bedrock models only.
    sagemaker_instance_types: str = Field(alias="SAGEMAKER_INSTANCE_TYPES", default="")

    @property
    def sagemaker_instances(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.sagemaker_instance_types.split(",") if t.strip())


class GenerateSettings(StorageSettings):
    chunk_concurrency: int = Field(alias="CHUNK_CONCURRENCY", default=4, ge=1, le=32)
    # Instance types of a deployed SageMaker endpoint, comma-separated; empty = not deployed,
    # so `backend: auto` chooses among Bedrock models only.
    sagemaker_instance_types: str = Field(alias="SAGEMAKER_INSTANCE_TYPES", default="")

    @property
    def sagemaker_instances(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.sagemaker_instance_types.split(",") if t.strip())

    # Stop starting new images when less than this much of the invocation is left, so the
    # chunk can still commit what it made before Lambda's timeout.
    commit_reserve_ms: int = Field(alias="COMMIT_RESERVE_MS", default=20_000, ge=1_000)
