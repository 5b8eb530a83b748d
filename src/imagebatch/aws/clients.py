"""boto3 client factories: the only place clients are built.

Cached so a warm Lambda reuses connections; `reset_clients()` lets the local AWS and tests
point new clients at a fresh endpoint. Endpoints come from the standard AWS_ENDPOINT_URL*
variables, so the same code talks to AWS or to the local moto server.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient
    from mypy_boto3_stepfunctions import SFNClient

_POOL = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5})
# Bedrock throttles by design. The chunk retries throttles itself (imagebatch.backends.retry:
# backoff with jitter, concurrency cut on each throttle), so botocore must not retry under it:
# hidden retries would multiply the attempts and hide every throttle from the limiter.
BEDROCK_READ_TIMEOUT_S = 120
_BEDROCK = Config(
    max_pool_connections=64,
    retries={"mode": "standard", "total_max_attempts": 1},
    read_timeout=BEDROCK_READ_TIMEOUT_S,
)
# The longest one call on _BEDROCK can take: botocore's default 60 s connect timeout, then
# the read. A call that starts with less than this left before the commit reserve gets a
# client whose timeouts end in time (bedrock_runtime_client_within).
BEDROCK_CALL_BOUND_S = 60 + BEDROCK_READ_TIMEOUT_S
_BEDROCK_CONNECT_TIMEOUT_S = 5


@lru_cache(maxsize=1)
def s3_client() -> S3Client:
    return boto3.client("s3", config=_POOL)


@lru_cache(maxsize=1)
def dynamodb_client() -> DynamoDBClient:
    return boto3.client("dynamodb", config=_POOL)


@lru_cache(maxsize=1)
def sfn_client() -> SFNClient:
    return boto3.client("stepfunctions", config=_POOL)


@lru_cache(maxsize=1)
def bedrock_runtime_client() -> BedrockRuntimeClient:
    return boto3.client("bedrock-runtime", config=_BEDROCK)


@lru_cache(maxsize=32)
def bedrock_runtime_client_within(total_s: int) -> BedrockRuntimeClient:
    """A client whose one call (connect and read) ends within `total_s` seconds. Callers
    round `total_s` down (to 5 s steps) so a container keeps a handful of these."""
    connect = min(_BEDROCK_CONNECT_TIMEOUT_S, max(1, total_s // 4))
    config = _BEDROCK.merge(Config(connect_timeout=connect, read_timeout=max(1, total_s - connect)))
    return boto3.client("bedrock-runtime", config=config)


@lru_cache(maxsize=1)
def sagemaker_runtime_client() -> SageMakerRuntimeClient:
    return boto3.client("sagemaker-runtime", config=_POOL)


@lru_cache(maxsize=1)
def events_client() -> EventBridgeClient:
    return boto3.client("events", config=_POOL)


@lru_cache(maxsize=1)
def iam_client() -> IAMClient:
    return boto3.client("iam", config=_POOL)


def reset_clients() -> None:
    for factory in (s3_client, dynamodb_client, sfn_client, bedrock_runtime_client):
        factory.cache_clear()
    bedrock_runtime_client_within.cache_clear()
    sagemaker_runtime_client.cache_clear()
    events_client.cache_clear()
    iam_client.cache_clear()
    sagemaker_client.cache_clear()


@lru_cache(maxsize=1)
def sagemaker_client() -> Any:
    """The control plane (DescribeEndpoint); typed by its use in aws.sagemaker_endpoints."""
    return boto3.client("sagemaker", config=_POOL)
