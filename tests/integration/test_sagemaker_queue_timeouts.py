"""A request waiting in SageMaker's queue gets no heartbeat (the container heartbeats after
each pipeline call), so SubmitChunk's HeartbeatSeconds must outlast the longest a request can
be queued, its RequestTTLSeconds, plus its first call: otherwise a request queued past the
heartbeat is submitted again while the first still waits to run (issue 18).

Read from the state machine and from what SubmitChunk really sends (its settings, through
the adapter, against botocore's model of InvokeEndpointAsync)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import boto3
from annotated_types import Le
from botocore.stub import ANY, Stubber

from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.settings import SubmitChunkSettings

ROOT = Path(__file__).resolve().parents[2]
# From the moment SageMaker hands the request to the container to its first heartbeat: one
# pipeline call (a few images at the largest size), well under ten minutes on any instance.
FIRST_HEARTBEAT_S = 600
ENV = {
    "LEDGER_TABLE": "ledger",
    "DATA_BUCKET": "bucket",
    "SAGEMAKER_ENDPOINT_NAME": "ep",
    "SAGEMAKER_INSTANCE_TYPE": "ml.inf2.xlarge",
}


def _submit_chunk_state() -> dict[str, Any]:
    asl = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
    state: dict[str, Any] = asl["States"]["GenerateChunks"]["ItemProcessor"]["States"][
        "SubmitChunk"
    ]
    return state


def _ttl_sent(settings: SubmitChunkSettings) -> int:
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    sent: dict[str, Any] = {}
    with Stubber(runtime) as stub:
        stub.add_response(
            "invoke_endpoint_async",
            {"InferenceId": "x"},
            {
                "EndpointName": "ep",
                "InputLocation": ANY,
                "ContentType": ANY,
                "Accept": ANY,
                "InferenceId": ANY,
                "RequestTTLSeconds": ANY,
                "InvocationTimeoutSeconds": ANY,
            },
        )
        runtime.meta.events.register(
            "provide-client-params.sagemaker-runtime.InvokeEndpointAsync",
            lambda params, **_: sent.update(params),
        )
        AsyncEndpoint(
            runtime,
            "ep",
            request_ttl_s=settings.request_ttl_s,
            invocation_timeout_s=settings.invocation_timeout_s,
        ).submit("s3://bucket/async-inputs/b/x.json", "x")
    return int(sent["RequestTTLSeconds"])


def test_the_heartbeat_outlasts_the_queue_submit_allows() -> None:
    state = _submit_chunk_state()
    heartbeat = state["HeartbeatSeconds"]
    settings = SubmitChunkSettings.model_validate(ENV)
    # the TTL SubmitChunk sends by default, and the most its setting accepts
    ttl_bound: int = next(
        cast(int, m.le)
        for m in SubmitChunkSettings.model_fields["request_ttl_s"].metadata
        if isinstance(m, Le)
    )
    for ttl in (_ttl_sent(settings), ttl_bound):
        assert ttl + FIRST_HEARTBEAT_S <= heartbeat
    # AND the task's timeout still covers a request queued to its TTL, then run to its limit
    assert state["TimeoutSeconds"] >= ttl_bound + settings.invocation_timeout_s
