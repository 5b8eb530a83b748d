"""The deployed-stack workflow against moto: a stack created in moto's CloudFormation with the
outputs template.yaml declares; submit, watch, batches/cost through a SigV4-signed query API
(the real query handler served on loopback), redrive --upload, and samconfig.toml defaults."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import boto3
import pytest
from imagebatch_cli.app import app
from imagebatch_cli.deployed_stack import read_samconfig
from imagebatch_cli.exit_codes import ExitCode
from imagebatch_cli.project import sample_manifest
from imagebatch_local.cloud.http_api import LocalQueryApi, QueryApiWsgi, load_query_handler
from typer.testing import CliRunner

from imagebatch.aws.clients import reset_clients
from imagebatch.aws.deployed import read_stack_outputs
from imagebatch.aws.ledger import Ledger
from imagebatch.errors import StackOutputsError
from imagebatch.models.records import BatchStatus, batch_id_for

REPO = Path(__file__).resolve().parents[2]
STACK = "imagebatch"  # samconfig.toml's stack_name: commands without --stack find it
BUCKET = "imagebatch-123456789012-us-west-2-imagebatch"
AWS_REGION = "us-west-2"  # where samconfig.toml deploys (the default model's region)
runner = CliRunner()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def query_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """The real query handler over HTTP on loopback; records each request's Authorization."""
    seen: list[str] = []
    wsgi = QueryApiWsgi(LocalQueryApi(load_query_handler(REPO / "functions" / "query")), {})

    def recording(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        seen.append(environ.get("HTTP_AUTHORIZATION", ""))
        return wsgi(environ, start_response)

    server = make_server("127.0.0.1", 0, recording, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stack(
    aws: None,
    monkeypatch: pytest.MonkeyPatch,
    query_api: tuple[str, list[str]],
    ledger_table_shape: dict[str, Any],
) -> dict[str, str]:
    """A stack in moto's CloudFormation with template.yaml's outputs."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    monkeypatch.setenv("AWS_REGION", AWS_REGION)
    ledger_shape = ledger_table_shape
    template = {
        "Resources": {
            "DataBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": BUCKET}},
            "LedgerTable": {"Type": "AWS::DynamoDB::Table", "Properties": ledger_shape},
        },
        "Outputs": {
            "DataBucketName": {"Value": {"Ref": "DataBucket"}},
            "LedgerTableName": {"Value": {"Ref": "LedgerTable"}},
            "QueryApiUrl": {"Value": query_api[0]},
            "BatchStateMachineArn": {
                "Value": f"arn:aws:states:{AWS_REGION}:123456789012:stateMachine:{STACK}-batch"
            },
        },
    }
    cfn = boto3.client("cloudformation", region_name=AWS_REGION)
    cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    outputs = read_stack_outputs(cfn, STACK, AWS_REGION)
    # the query handler reads the stack's table, as its function's environment says
    monkeypatch.setenv("LEDGER_TABLE", outputs.ledger_table)
    monkeypatch.setenv("DATA_BUCKET", outputs.data_bucket)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    reset_clients()
    return {"bucket": outputs.data_bucket, "table": outputs.ledger_table}


def test_stack_outputs_are_read_from_describe_stacks(stack: dict[str, str]) -> None:
    cfn = boto3.client("cloudformation", region_name=AWS_REGION)
    outputs = read_stack_outputs(cfn, STACK, AWS_REGION)
    assert outputs.data_bucket == BUCKET and outputs.ledger_table == stack["table"]
    with pytest.raises(StackOutputsError, match=f"no stack 'other' in {AWS_REGION}"):
        read_stack_outputs(cfn, "other", AWS_REGION)
    result = runner.invoke(app, ["stack", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data_bucket"] == BUCKET


def test_a_stack_without_the_outputs_is_named(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    cfn = boto3.client("cloudformation", region_name=AWS_REGION)
    bare = {"Resources": {"B": {"Type": "AWS::S3::Bucket"}}}
    cfn.create_stack(StackName="bare", TemplateBody=json.dumps(bare))
    result = runner.invoke(app, ["watch", "b1", "--stack", "bare"])
    assert result.exit_code == ExitCode.ERROR
    assert "has no output DataBucketName, LedgerTableName, QueryApiUrl" in result.output


def test_samconfig_gives_the_default_stack_and_region() -> None:
    config = read_samconfig(REPO / "samconfig.toml")
    assert config.stack_name == STACK and config.region == AWS_REGION


def test_submit_uploads_to_the_stacks_bucket(stack: dict[str, str]) -> None:
    # WHEN the demo is submitted with no --stack (samconfig.toml names the stack)
    result = runner.invoke(app, ["submit", "--sample", "demo", "--json"])
    # THEN it is under manifests/ of the stack's bucket, and its batch id is ingest's
    assert result.exit_code == 0, result.output
    submitted = json.loads(result.stdout)
    s3 = boto3.client("s3", region_name=AWS_REGION)
    head = s3.head_object(Bucket=BUCKET, Key="manifests/demo.jsonl")
    content = hashlib.sha256(sample_manifest("demo").read_bytes()).hexdigest()
    assert submitted["batch_id"] == batch_id_for(BUCKET, "manifests/demo.jsonl", content)
    assert head["ContentLength"] == sample_manifest("demo").stat().st_size


def test_submit_refuses_what_ingest_would_reject(stack: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "over.jsonl"
    manifest.write_text(
        json.dumps({"batch": {"backend": "bedrock", "max_cost_usd": 0.01}})
        + "\n"
        + json.dumps({"id": "a", "prompt": "a mug", "count": 3})
        + "\n"
    )
    result = runner.invoke(app, ["submit", str(manifest), "--stack", STACK])
    assert result.exit_code == ExitCode.REJECTED
    assert "not uploaded" in result.output and "exceeds max_cost_usd" in result.output
    listing = boto3.client("s3", region_name=AWS_REGION).list_objects_v2(Bucket=BUCKET)
    assert listing.get("KeyCount", 0) == 0


def test_submit_validates_against_the_stacks_deployed_parameters(
    stack: dict[str, str], tmp_path: Path
) -> None:
    # GIVEN a sagemaker manifest, and a second stack deployed with the SageMaker endpoint
    # (its parameters are what DescribeStacks reports), writing to the same bucket and table
    manifest = tmp_path / "sm.jsonl"
    manifest.write_text(
        json.dumps({"batch": {"backend": "sagemaker"}})
        + "\n"
        + json.dumps({"id": "a", "prompt": "a mug", "width": 512, "height": 512})
        + "\n"
    )
    cfn = boto3.client("cloudformation", region_name=AWS_REGION)
    outputs = cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
    with_endpoint = {
        "Parameters": {
            "EnableSageMaker": {"Type": "String"},
            "SageMakerShapeBuckets": {"Type": "String"},
        },
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {o["OutputKey"]: {"Value": o["OutputValue"]} for o in outputs},
    }
    cfn.create_stack(
        StackName="with-endpoint",
        TemplateBody=json.dumps(with_endpoint),
        Parameters=[
            {"ParameterKey": "EnableSageMaker", "ParameterValue": "true"},
            {"ParameterKey": "SageMakerShapeBuckets", "ParameterValue": "512x512"},
        ],
    )
    # WHEN it is submitted to the stack without the endpoint, and to the one with it
    plain = runner.invoke(app, ["submit", str(manifest), "--stack", STACK])
    endpoint = runner.invoke(app, ["submit", str(manifest), "--stack", "with-endpoint"])
    # THEN the first is refused as ingest there would refuse it, the second goes up
    assert plain.exit_code == ExitCode.REJECTED
    assert "'sagemaker' is not deployed" in plain.output
    assert endpoint.exit_code == 0, endpoint.output


def _running_batch(table: str, batch_id: str) -> Ledger:
    ledger = Ledger(boto3.client("dynamodb", region_name=AWS_REGION), table)
    ledger.create_batch(batch_id, {"status": "RUNNING", "images_total": 4, "backend": "bedrock"})
    return ledger


def test_watch_follows_the_summary_until_the_batch_ends(stack: dict[str, str]) -> None:
    # GIVEN a running batch that ends PARTIAL a moment later
    ledger = _running_batch(stack["table"], "b-watch")

    def finish() -> None:
        time.sleep(0.4)
        ledger.settle_batch(
            "b-watch", BatchStatus.PARTIAL, {}, {"images_succeeded": 3, "images_failed": 1}
        )

    threading.Thread(target=finish).start()
    # WHEN it is watched THEN the command ends with it, with PARTIAL's exit code
    result = runner.invoke(app, ["watch", "b-watch", "--stack", STACK, "--interval", "0.05"])
    assert result.exit_code == ExitCode.PARTIAL, result.output
    assert "PARTIAL" in result.output and "charged to budget" in result.output
    assert "imagebatch redrive b-watch" in result.output


def test_watch_gives_up_after_its_timeout(stack: dict[str, str]) -> None:
    _running_batch(stack["table"], "b-slow")
    result = runner.invoke(
        app, ["watch", "b-slow", "--stack", STACK, "--interval", "0.05", "--timeout", "0.01"]
    )
    assert result.exit_code == ExitCode.ERROR and "still RUNNING" in result.output


def test_query_commands_reach_the_stacks_api_signed(
    stack: dict[str, str], query_api: tuple[str, list[str]]
) -> None:
    ledger = _running_batch(stack["table"], "b-api")
    ledger.settle_batch("b-api", BatchStatus.SUCCEEDED, {}, {"images_succeeded": 4})
    listed = runner.invoke(app, ["batches", "--stack", STACK, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [b["batch_id"] for b in json.loads(listed.stdout)["batches"]] == ["b-api"]
    one = runner.invoke(app, ["cost", "b-api", "--stack", STACK, "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["status"] == "SUCCEEDED"
    refused = runner.invoke(app, ["cost", "no-such", "--stack", STACK])
    assert refused.exit_code == ExitCode.ERROR and "no batch no-such" in refused.output
    # every request carried a SigV4 signature for execute-api
    assert query_api[1] and all(
        auth.startswith("AWS4-HMAC-SHA256 Credential=") and "/execute-api/aws4_request" in auth
        for auth in query_api[1]
    )


def test_redrive_uploads_to_the_stacks_bucket(stack: dict[str, str], tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name=AWS_REGION)
    header = json.dumps({"batch": {"backend": "bedrock"}})
    item = json.dumps({"id": "a-1", "prompt": "p", "seed": 3})
    s3.put_object(Bucket=BUCKET, Key="reports/b9/redrive.jsonl", Body=f"{header}\n{item}\n")
    failed = json.dumps({"image_id": "a-1", "failure_class": "throttled"})
    s3.put_object(Bucket=BUCKET, Key="reports/b9/failed.jsonl", Body=failed + "\n")
    result = runner.invoke(
        app,
        ["redrive", "b9", "--stack", STACK, "--upload", "--output", str(tmp_path / "r.jsonl")],
    )
    assert result.exit_code == 0, result.output
    assert s3.head_object(Bucket=BUCKET, Key="manifests/r.jsonl")["ContentLength"] > 0
    assert "imagebatch watch" in result.output


def test_watch_names_a_batch_ingest_never_recorded(
    stack: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagebatch_cli.commands import deployed

    monkeypatch.setattr(deployed, "INGEST_WAIT_S", 0.2)
    result = runner.invoke(app, ["watch", "nope", "--stack", STACK, "--interval", "0.05"])
    assert result.exit_code == ExitCode.ERROR and "no batch nope" in result.output


def test_validate_and_estimate_leave_out_images_the_stack_already_made(
    stack: dict[str, str], tmp_path: Path
) -> None:
    import tempfile

    from imagebatch.models.bedrock_models import load_catalogue
    from imagebatch.models.records import MadeImage
    from imagebatch.planning.plan import plan_batch

    class Asked:
        """The identities a plan looks up (a spy on planning's MadeImages port)."""

        def __init__(self) -> None:
            self.identities: list[str] = []

        def find_made_images(self, identities: Any) -> dict[str, MadeImage]:
            self.identities += identities
            return {}

    # GIVEN the stack's image index holds 3 of the demo's 15 images
    asked = Asked()
    demo = sample_manifest("demo")
    with tempfile.TemporaryDirectory() as spool, demo.open("rb") as stream:
        plan_batch(
            stream,
            demo.name,
            batch_id="p",
            catalogue=load_catalogue(),
            chunk_size=50,
            spool=Path(spool),
            made=asked,
        )
    assert len(asked.identities) == 15
    ddb = boto3.client("dynamodb", region_name=AWS_REGION)
    for n, identity in enumerate(asked.identities[:3]):
        item = {"batch_id": "old", "image_id": f"i{n}", "output_key": f"outputs/old/i{n}.png"}
        ddb.put_item(
            TableName=stack["table"],
            Item={
                "pk": {"S": f"IMAGEID#{identity}"},
                "sk": {"S": "SOURCE"},
                **{key: {"S": value} for key, value in item.items()},
            },
        )
    # WHEN the demo is validated and estimated on the stack, and offline
    on_stack = runner.invoke(app, ["validate", "--sample", "demo", "--stack", STACK])
    offline = runner.invoke(app, ["validate", "--sample", "demo"])
    estimate = runner.invoke(app, ["estimate", "--sample", "demo", "--stack", STACK, "--json"])
    # THEN on the stack they say so and the estimate counts 12 images' inference; offline,
    # reuse is unknown and every image counts
    assert on_stack.exit_code == 0, on_stack.output
    assert "3 of 15 images already made, $0.240000 saved" in on_stack.output
    assert "reuse unknown" in offline.output
    assert "inference $0.960000" in on_stack.output
    assert "inference $1.200000" in offline.output
    ingest = json.loads(estimate.stdout)["ingest"]
    assert (ingest["images_reused"], ingest["reuse_saved_micro_usd"]) == (3, 240_000)
