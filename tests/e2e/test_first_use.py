"""A model's first use on a fresh account, end to end: AWS Marketplace subscribes the account
while Bedrock answers AccessDeniedException, and the batch waits that out.

Time is scaled, not faked: GenerateChunk runs in-process with the real clock and sleep (the
handler builds its own RetryingBackend), so the test shrinks both sides by SCALE instead: the
local Bedrock denies the model for 90 s x SCALE from its first call, and the function waits
out AccessDenied for ACCESS_WAIT_MS = 150 s x SCALE, asking every 10 s x SCALE, the deployed
defaults scaled alike. The unit test tests/unit/test_first_use_access.py runs the unscaled
90 s on a fake clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws

from imagebatch.backends.retry import MODEL_ACCESS_NOT_GRANTED

pytestmark = pytest.mark.e2e

MODEL = "stability.sd3-5-large-v1:0"
REPO = Path(__file__).resolve().parents[2]
SCALE = 1 / 60
DENIED_S = 90 * SCALE


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    options = LocalOptions(
        template=REPO / "template.yaml",
        parameter_overrides={"ChunkSize": "4"},
        region="us-west-2",
        renderer="null",
        function_environment={
            "ACCESS_WAIT_MS": str(round(150_000 * SCALE)),
            "ACCESS_POLL_MS": str(round(10_000 * SCALE)),
        },
    )
    with local_aws(options) as running:
        yield running


def _manifest(path: Path, n: int, prefix: str) -> Path:
    header = {"batch": {"backend": "bedrock", "model": MODEL}}
    items = [{"id": f"{prefix}-{i}", "prompt": f"a teapot, {i}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(line) for line in [header, *items]) + "\n")
    return path


def test_ninety_seconds_of_first_use_access_denied_then_the_batch_succeeds(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN a model the account has never used: AccessDenied for 90 s (scaled) from its first call
    aws.bedrock.deny_first_use(MODEL, DENIED_S)
    errors_before = aws.bedrock.stats.errors

    # WHEN a batch of 8 images is run
    batch_id = aws.upload_manifest(_manifest(tmp_path / "first.jsonl", 8, "first"))
    summary = aws.wait_for_batch(batch_id, timeout_s=120)

    # THEN Bedrock refused calls at first, and every image was made once access came (called
    # through the stack's inference profile for the model, as on AWS in us-west-2)
    assert MODEL in aws.stack.inference_profiles.values()
    assert aws.bedrock.stats.errors > errors_before
    assert summary.status == "SUCCEEDED"
    assert summary.images_succeeded == 8 and summary.images_failed == 0
    assert aws.wait_for_execution(batch_id) == "SUCCEEDED"


def test_access_that_never_comes_fails_the_images_with_the_doctor_hint(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN a model refused far longer than the function waits
    aws.bedrock.deny_first_use(MODEL, 3600)

    # WHEN a batch is run
    batch_id = aws.upload_manifest(_manifest(tmp_path / "never.jsonl", 3, "never"))
    summary = aws.wait_for_batch(batch_id, timeout_s=120)

    # THEN the batch fails, each image saying what to do
    assert summary.status == "FAILED"
    records = list(aws.ledger().image_records(batch_id))
    assert len(records) == 3
    assert all(r["failure_reason"].startswith(MODEL_ACCESS_NOT_GRANTED) for r in records)
    aws.bedrock.deny_first_use(MODEL, 0)
