"""The chaos mode for tests: a local AWS with imagebatch_local.cloud.chaos installed, its
seed set per batch, and the invariant checker's evidence for a batch run under it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from imagebatch_local.cloud.chaos import Chaos, ChaosSpec
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws

from imagebatch.aws.batch_evidence import read_batch_evidence
from imagebatch.costs.invariants import BatchEvidence

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chaotic_aws() -> Iterator[LocalAws]:
    """One local AWS with both backends (the local endpoint serves 64x64), the null renderer,
    small chunks and quick backoff, with the chaos mode installed at rate 0: each test
    reseeds it (`chaos_of(aws).reseed(...)`)."""
    options = LocalOptions(
        template=REPO / "template.yaml",
        renderer="null",
        backend="sagemaker",
        shape_buckets="64x64",
        chaos=ChaosSpec(0, 0.0),
        parameter_overrides={"ChunkSize": "3"},
        function_environment={"RETRY_BASE_MS": "5", "RETRY_CAP_MS": "40"},
    )
    with local_aws(options) as running:
        # Time compressed: a result whose RecordResult attempt died comes back after the
        # queue's visibility timeout (360 s in the template, 6x the function's); 5 s here, so
        # a seed ends in seconds. Earlier redelivery is at-least-once delivery all the same.
        sqs = running.client("sqs")
        for source in running.stack.sqs_sources:
            sqs.set_queue_attributes(QueueUrl=source[1], Attributes={"VisibilityTimeout": "5"})
        yield running
        # The teardown (the endpoint's last scale-in, its observer's window) belongs to no
        # seed's batch: faults there would fail whichever test ran last, checking nothing.
        chaos_of(running).reseed(ChaosSpec(0, 0.0))


def chaos_of(aws: LocalAws) -> Chaos:
    assert aws.chaos is not None, "the local AWS was started without chaos"
    return aws.chaos


def evidence(aws: LocalAws, batch_id: str, paid_images: int | None) -> BatchEvidence:
    return read_batch_evidence(
        aws.client("dynamodb"),
        aws.table,
        aws.s3(),
        aws.bucket,
        batch_id,
        paid_images=paid_images,
    )
