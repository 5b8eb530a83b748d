"""The local AWS authorizes every call with the caller's role from template.yaml: a function
or the state machine without a permission it needs fails the run, naming who, what, where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.session import LocalOptions, LocalRunError, local_aws
from support.ledger_summary import as_item

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODEL = "stability.sd3-5-large-v1:0"


def _manifest(path: Path, n: int) -> Path:
    lines: list[dict[str, Any]] = [
        {"batch": {"backend": "bedrock", "model": MODEL, "max_cost_usd": 5}}
    ]
    lines += [{"id": f"iam-{i}", "prompt": f"a mug, {i}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def _options(*without: tuple[str, str]) -> LocalOptions:
    return LocalOptions(
        template=REPO / "template.yaml",
        parameter_overrides={"ChunkSize": "2"},
        without_permissions=without,
    )


@pytest.mark.parametrize(
    ("owner", "action", "resource"),
    [
        # a function's own call
        (
            "GenerateChunkFunction",
            "bedrock:InvokeModel",
            f"arn:aws:bedrock:us-west-2::foundation-model/{MODEL}",
        ),
        # a state machine task, made by moto's Step Functions engine
        (
            "BatchStateMachine",
            "lambda:InvokeFunction",
            "arn:aws:lambda:us-west-2:123456789012:function:imagebatch-local-GenerateChunkFunction",
        ),
    ],
)
def test_a_run_whose_role_lacks_a_permission_fails_naming_it(
    tmp_path: Path, owner: str, action: str, resource: str
) -> None:
    # GIVEN the template with one permission its code uses taken out
    with pytest.raises(LocalRunError) as failed, local_aws(_options((owner, action))) as aws:
        # WHEN a batch runs
        batch_id = aws.upload_manifest(_manifest(tmp_path / "iam.jsonl", 2))
        as_item(aws.wait_for_batch(batch_id, timeout_s=120))
        aws.wait_for_execution(batch_id)

    # THEN the run fails with AWS's AccessDenied, naming the role, the action, the resource
    message = str(failed.value)
    assert f"IAM denied {owner} (role imagebatch-local-{owner}Role) {action} on {resource}" in (
        message
    )
    assert f"assumed-role/imagebatch-local-{owner}Role/" in message
    assert f"is not authorized to perform: {action} on resource: {resource}" in message


def test_every_call_of_a_batch_and_of_the_query_api_is_allowed_and_checked(
    tmp_path: Path,
) -> None:
    # GIVEN the template as it is
    with local_aws(_options()) as aws:
        # WHEN a batch runs and the query API is asked about it
        batch_id = aws.upload_manifest(_manifest(tmp_path / "ok.jsonl", 3))
        summary = as_item(aws.wait_for_batch(batch_id, timeout_s=120))
        assert aws.wait_for_execution(batch_id) == "SUCCEEDED"
        answers: dict[str, Any] = {
            path: aws.query_api(path, query)
            for path, query in [
                ("/batches", {"since": "2000-01-01", "until": "2100-01-01"}),
                (f"/batches/{batch_id}", None),
                (f"/batches/{batch_id}/items", None),
                ("/costs", {"since": "2000-01-01", "until": "2100-01-01"}),
            ]
        }

        # THEN nothing was denied, and each role's calls were checked (not passed unseen)
        assert summary["status"] == "SUCCEEDED"
        assert aws.iam.denials == []
        assert {status for status, _ in answers.values()} == {200}
        checked = aws.iam.allowed
        assert {
            ("IngestFunction", "states:StartExecution"),
            ("GenerateChunkFunction", "bedrock:InvokeModel"),
            ("GenerateChunkFunction", "dynamodb:UpdateItem"),
            ("FinalizeFunction", "s3:PutObject"),
            ("ContactSheetFunction", "s3:GetObject"),
            ("QueryFunction", "dynamodb:Query"),
            ("QueryFunction", "dynamodb:GetItem"),
            ("BatchStateMachine", "s3:GetObject"),  # the Distributed Map's ItemReader
            ("BatchStateMachine", "states:StartExecution"),  # its child executions
            ("BatchStateMachine", "lambda:InvokeFunction"),
        } <= checked
