"""The sample events under events/ (what a user passes to `sam local invoke -e`) stay true:
each runs through its own handler on moto, in pipeline order, and does what it says.

Bedrock is the local Bedrock (the tiny model over Bedrock's wire format) at the standard
AWS_ENDPOINT_URL_BEDROCK_RUNTIME variable; everything else is in-process moto.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from imagebatch_local.cloud.lambda_runtime import LocalLambdaContext
from imagebatch_local.fakes.bedrock_server import LocalBedrock
from imagebatch_local.fakes.tiny_model import ImageRenderer, build_tiny_model, load_pipeline
from support.moto_sagemaker import INSTANCE_TYPE, deploy_moto_endpoint, scale_to_zero

from imagebatch.aws.clients import reset_clients
from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.observability import metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = REPO_ROOT / "events"
FUNCTIONS = REPO_ROOT / "functions"
TABLE = "imagebatch-ledger-events"


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


# The region the samples come from: where the stack (samconfig.toml) and its models run.
AWS_REGION = sample("s3-manifest-put.json")["Records"][0]["awsRegion"]


def load_handler(function: str) -> Any:
    """A fresh module per test, so each handler reads this test's settings."""
    path = FUNCTIONS / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"sample_fn_{function}", path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def invoke(function: str, event: dict[str, Any], memory_mb: int = 512) -> dict[str, Any]:
    context = LocalLambdaContext(
        function_name=function, memory_limit_in_mb=memory_mb, timeout_s=900
    )
    result: dict[str, Any] = load_handler(function)(event, context)
    return result


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> ImageRenderer:
    return ImageRenderer(load_pipeline(build_tiny_model(tmp_path_factory.mktemp("tiny") / "m")))


@pytest.fixture
def stack(
    aws: None,
    monkeypatch: pytest.MonkeyPatch,
    renderer: ImageRenderer,
    regional_ledger_table: Callable[[str, str], str],
) -> Iterator[dict[str, str]]:
    """The bucket the samples name, the ledger table and a state machine, on moto."""
    bucket = sample("s3-manifest-put.json")["Records"][0]["s3"]["bucket"]["name"]
    s3 = boto3.client("s3", region_name=AWS_REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
    # versioned, as template.yaml's DataBucket: the S3 sample names a version
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    regional_ledger_table(TABLE, AWS_REGION)
    iam = boto3.client("iam", region_name=AWS_REGION)
    role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = (REPO_ROOT / "statemachine" / "batch.asl.json").read_text(encoding="utf-8")
    machine = boto3.client("stepfunctions", region_name=AWS_REGION).create_state_machine(
        name="imagebatch-batch", definition=definition, roleArn=role
    )["stateMachineArn"]
    bus = boto3.client("events", region_name=AWS_REGION).create_event_bus(Name="imagebatch-batches")
    with LocalBedrock(renderer) as bedrock:
        for name, value in {
            "EVENT_BUS_NAME": bus["EventBusArn"].rsplit("/", 1)[1],
            "DATA_BUCKET": bucket,
            "LEDGER_TABLE": TABLE,
            "STATE_MACHINE_ARN": machine,
            "AWS_REGION": AWS_REGION,
            "AWS_DEFAULT_REGION": AWS_REGION,
            "POWERTOOLS_SERVICE_NAME": "imagebatch",
            "POWERTOOLS_METRICS_NAMESPACE": "imagebatch-test",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.endpoint_url,
        }.items():
            monkeypatch.setenv(name, value)
        # Powertools reads the namespace when the shared Metrics object is built, which an
        # earlier test may have done without this environment: set it as the stack would.
        monkeypatch.setattr(metrics, "namespace", "imagebatch-test")
        reset_clients()
        yield {"bucket": bucket, "state_machine": machine}
    reset_clients()


def test_the_samples_run_through_their_handlers_in_pipeline_order(
    stack: dict[str, str],
) -> None:
    s3 = boto3.client("s3", region_name=AWS_REGION)
    put = sample("s3-manifest-put.json")
    key = put["Records"][0]["s3"]["object"]["key"]

    # GIVEN the demo manifest at the key the S3 sample names
    s3.upload_file(str(EVENTS / "manifests" / "demo.jsonl"), stack["bucket"], key)
    # (the version S3 gave this upload, in place of the sample's: ingest reads that version)
    version = s3.head_object(Bucket=stack["bucket"], Key=key)["VersionId"]
    put["Records"][0]["s3"]["object"]["versionId"] = version

    # WHEN the S3 notification sample reaches the ingest function
    ingested = invoke("ingest", put)["batches"]

    # THEN the batch starts, and it is the batch the other samples name
    assert [b["status"] for b in ingested] == ["STARTED"]
    batch_id = ingested[0]["batch_id"]
    sfn = boto3.client("stepfunctions", region_name=AWS_REGION)
    [execution] = sfn.list_executions(stateMachineArn=stack["state_machine"])["executions"]
    execution_input = json.loads(
        sfn.describe_execution(executionArn=execution["executionArn"])["input"]
    )
    assert execution["name"] == batch_id
    # the finalize sample is the execution input, as the FinalizeBatch state passes it ("$")
    assert sample("finalize.json") == execution_input, json.dumps(execution_input)
    index = json.loads(
        s3.get_object(Bucket=stack["bucket"], Key=execution_input["chunk_index_key"])["Body"].read()
    )
    # the chunk sample is the Map's ItemSelector output for the first chunk of the index
    chunk_event = sample("generate-chunk.json")
    assert chunk_event == {
        "batch_id": batch_id,
        "bucket": stack["bucket"],
        "chunk_concurrency": execution_input["chunk_concurrency"],
        # each chunk names its own backend: a batch under auto may use both
        "backend": index[0]["backend"],
        "chunk": index[0],
    }, json.dumps(index[0])
    assert sample("contact-sheet.json") == {"batch_id": batch_id, "bucket": stack["bucket"]}

    # WHEN the chunk sample reaches the generate function
    made = invoke("generate_chunk", chunk_event)

    # THEN every image of the chunk is made and charged
    assert made["succeeded"] == chunk_event["chunk"]["images"] == ingested[0]["images"]
    assert made["failed"] == 0
    assert made["cost_micro_usd"] > 0

    # WHEN the finalize sample follows
    report = invoke("finalize", sample("finalize.json"))

    # THEN the batch is accounted for and its report written
    assert report["status"] == "SUCCEEDED"
    assert report["images_succeeded"] == made["succeeded"]
    s3.head_object(Bucket=stack["bucket"], Key=f"reports/{batch_id}/summary.json")

    # WHEN the contact-sheet sample follows
    sheet = invoke("contact_sheet", sample("contact-sheet.json"))

    # THEN the review page and the sheet exist
    for page in [*sheet["sheet_keys"], sheet["index_key"]]:
        s3.head_object(Bucket=stack["bucket"], Key=page)


def test_the_schedule_sample_renders_the_sample_catalog(stack: dict[str, str]) -> None:
    s3 = boto3.client("s3", region_name=AWS_REGION)
    config = json.loads((EVENTS / "catalog" / "config.json").read_text(encoding="utf-8"))
    prefix = f"catalogs/{config['name']}/"
    # GIVEN the sample catalog in the data bucket
    s3.upload_file(str(EVENTS / "catalog" / "config.json"), stack["bucket"], prefix + "config.json")
    s3.upload_file(
        str(EVENTS / "catalog" / config["products"]), stack["bucket"], prefix + config["products"]
    )

    # WHEN the scheduler's sample input reaches the catalog function
    result = invoke("catalog", sample("catalog-schedule.json"))

    # THEN the night's manifest holds every product variant (nothing was made before)
    [catalog] = result["catalogs"]
    assert catalog["catalog"] == config["name"]
    assert catalog["changed"] == 60 * len(config["variants"])
    body = s3.get_object(Bucket=stack["bucket"], Key=catalog["manifest_key"])["Body"].read()
    assert len(body.decode().splitlines()) == 1 + catalog["changed"]


def test_the_endpoint_state_change_sample_records_and_attributes_instance_time(
    stack: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the endpoint the sample names, deployed with its one initial instance (moto's
    # SageMaker: DescribeEndpoint reports it; g4dn, an instance type moto accepts)
    event = sample("endpoint-state-change.json")
    name = event["detail"]["EndpointName"]
    deploy_moto_endpoint(name, region=AWS_REGION)
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", name)
    monkeypatch.setenv("SAGEMAKER_INSTANCE_TYPE", INSTANCE_TYPE)
    monkeypatch.setenv("OBSERVER_SETTLE_S", "0")  # no result can be on its way here

    # WHEN the state change sample reaches the observer, and again after autoscaling set
    # the variant to zero (UpdateEndpointWeightsAndCapacities, as Application Auto Scaling)
    first = invoke("endpoint_observer", event, memory_mb=256)
    time.sleep(1.1)  # the instance is up at least a second: a cost above zero to attribute
    scale_to_zero(name, region=AWS_REGION)
    second = invoke("endpoint_observer", event, memory_mb=256)

    # THEN the instance's life is one window, and with no request in it, its whole cost is
    # the endpoint's unattributed idle
    assert first == {"desired": 1, "current": 1, "recorded": True, "windows_attributed": 0}
    assert second == {"desired": 0, "current": 0, "recorded": True, "windows_attributed": 1}
    [window] = EndpointUsageStore(boto3.client("dynamodb", region_name=AWS_REGION), TABLE).windows(
        name
    )
    assert int(window["billed_micro_usd"]) == int(window["unattributed_micro_usd"]) >= 204
    assert window["inference_micro_usd"] == 0
