"""A batch whose execution ended without finishing it (finalize failed, stopped, timed out)
has a way forward: delivering its upload again restarts it under the next execution name,
and a running or finished execution is never started twice (issue 10, defect 4)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.stepfunctions import MAX_RESTARTS, StepFunctionsStarter
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.errors import RestartLimitError
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.pipeline.ingest import IngestPorts, ManifestObject, ingest_manifest
from imagebatch.planning.stack_options import DeployedOptions

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def machine(sfn_client: Any) -> str:
    role = boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="sfn", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    definition = (REPO_ROOT / "statemachine" / "batch.asl.json").read_text(encoding="utf-8")
    arn: str = sfn_client.create_state_machine(
        name="stack-batch", definition=definition, roleArn=role
    )["stateMachineArn"]
    return arn


def executions(sfn: Any, machine: str) -> dict[str, str]:
    listed = sfn.list_executions(stateMachineArn=machine)["executions"]
    return {e["name"]: e["status"] for e in listed}


def test_a_running_execution_is_not_started_again(sfn_client: Any, machine: str) -> None:
    starter = StepFunctionsStarter(sfn_client, machine)
    assert starter.start("b-1", {"batch_id": "b-1"}) == "b-1"
    assert starter.start("b-1", {"batch_id": "b-1"}) == "b-1"
    assert executions(sfn_client, machine) == {"b-1": "RUNNING"}


def test_an_execution_that_ended_unfinished_is_restarted_under_the_next_name(
    sfn_client: Any, machine: str
) -> None:
    starter = StepFunctionsStarter(sfn_client, machine)
    starter.start("b-1", {"batch_id": "b-1"})
    # GIVEN the batch's execution was stopped (as after a failed finalize, it is over)
    sfn_client.stop_execution(executionArn=starter.execution_arn("b-1"), error="Finalize")

    # WHEN the batch is started again
    name = starter.start("b-1", {"batch_id": "b-1"})

    # THEN a new execution carries it, with the same input
    assert name == "b-1-r1"
    assert executions(sfn_client, machine) == {"b-1": "ABORTED", "b-1-r1": "RUNNING"}
    described = sfn_client.describe_execution(executionArn=starter.execution_arn(name))
    assert json.loads(described["input"]) == {"batch_id": "b-1"}


def test_restarts_are_bounded(sfn_client: Any, machine: str) -> None:
    starter = StepFunctionsStarter(sfn_client, machine)
    for _ in range(MAX_RESTARTS + 1):
        name = starter.start("b-1", {})
        sfn_client.stop_execution(executionArn=starter.execution_arn(name))
    with pytest.raises(RestartLimitError):
        starter.start("b-1", {})


def test_delivering_the_upload_again_restarts_a_batch_whose_execution_failed(
    s3_client: Any,
    s3_bucket: str,
    dynamodb_client: Any,
    ledger_table: str,
    sfn_client: Any,
    machine: str,
) -> None:
    s3_client.upload_file(
        str(REPO_ROOT / "events" / "manifests" / "demo.jsonl"), s3_bucket, "manifests/demo.jsonl"
    )
    etag = s3_client.head_object(Bucket=s3_bucket, Key="manifests/demo.jsonl")["ETag"]
    starter = StepFunctionsStarter(sfn_client, machine)
    ports = IngestPorts(
        store=BatchStore(s3_client, s3_bucket),
        ledger=Ledger(dynamodb_client, ledger_table),
        starter=starter,
        catalogue=load_catalogue(),
    )
    stack = DeployedOptions(
        chunk_size=50,
        max_concurrency=10,
        prices=load_aws_prices().region("us-east-1"),
        shape=Shape(chunk_size=50, map_concurrency=10),
    )
    upload = ManifestObject(s3_bucket, "manifests/demo.jsonl", etag)
    first = ingest_manifest(upload, ports, stack)
    assert first.status == "STARTED"
    # GIVEN the execution failed before finalize settled the batch (still RUNNING)
    sfn_client.stop_execution(executionArn=starter.execution_arn(first.batch_id))

    # WHEN S3 delivers the same upload again (or the user uploads the same bytes again)
    again = ingest_manifest(upload, ports, stack)

    # THEN it is the same batch, not a second one, and a new execution carries it
    assert (again.status, again.batch_id) == ("DUPLICATE", first.batch_id)
    assert executions(sfn_client, machine) == {
        first.batch_id: "ABORTED",
        f"{first.batch_id}-r1": "RUNNING",
    }


class _ReplyLostLedger(Ledger):
    """The batch record's PutItem lands, its reply is lost, and botocore sends it again: the
    resend is refused by the record's own condition (attribute_not_exists)."""

    def create_batch(self, batch_id: str, attributes: Any) -> bool:
        super().create_batch(batch_id, attributes)
        return super().create_batch(batch_id, attributes)


def test_an_ingest_whose_batch_record_reply_was_lost_still_starts_the_batch(
    s3_client: Any,
    s3_bucket: str,
    dynamodb_client: Any,
    ledger_table: str,
    sfn_client: Any,
    machine: str,
) -> None:
    s3_client.upload_file(
        str(REPO_ROOT / "events" / "manifests" / "demo.jsonl"), s3_bucket, "manifests/demo.jsonl"
    )
    etag = s3_client.head_object(Bucket=s3_bucket, Key="manifests/demo.jsonl")["ETag"]
    # GIVEN the reply to ingest's write of the batch record is lost (chaos e2e, seed 27)
    ports = IngestPorts(
        store=BatchStore(s3_client, s3_bucket),
        ledger=_ReplyLostLedger(dynamodb_client, ledger_table),
        starter=StepFunctionsStarter(sfn_client, machine),
        catalogue=load_catalogue(),
    )
    stack = DeployedOptions(
        chunk_size=50,
        max_concurrency=10,
        prices=load_aws_prices().region("us-east-1"),
        shape=Shape(chunk_size=50, map_concurrency=10),
    )

    # WHEN ingest runs
    outcome = ingest_manifest(ManifestObject(s3_bucket, "manifests/demo.jsonl", etag), ports, stack)

    # THEN the batch's execution runs: no other delivery is there to start it
    assert executions(sfn_client, machine) == {outcome.batch_id: "RUNNING"}
