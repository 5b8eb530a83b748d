"""`imagebatch endpoint compile`: the CreateTrainingJob request boto3's sagemaker client sends,
checked on the wire against moto's SageMaker and against botocore's service model; following
the job; the deploy command it prints; and that no SageMaker Python SDK is needed."""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.validate import ParamValidator
from imagebatch_cli.app import app
from imagebatch_cli.compile_job import (
    CompileJob,
    CompileJobSpec,
    JobStatus,
    create_training_job_request,
    deploy_command,
)
from imagebatch_cli.exit_codes import CliError, ExitCode
from typer.testing import CliRunner

from imagebatch.models.sagemaker_contract import parse_buckets

REGION = "us-west-2"
STACK = "imagebatch"
DATA_BUCKET = "imagebatch-123456789012-data"
ROLE = "arn:aws:iam::123456789012:role/imagebatch-ModelCompileRole-abc"
IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/imagebatch-neuron:2026-12-02"
MODEL = "stabilityai/stable-diffusion-2-1-base"
runner = CliRunner()


@pytest.fixture
def stack(aws: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A stack in moto's CloudFormation with template.yaml's outputs the command reads."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    template = {
        "Resources": {
            "DataBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": DATA_BUCKET}}
        },
        "Outputs": {
            "DataBucketName": {"Value": {"Ref": "DataBucket"}},
            "LedgerTableName": {"Value": "ledger"},
            "QueryApiUrl": {"Value": "https://api.example"},
            "ModelCompileRoleArn": {"Value": ROLE},
        },
    }
    cfn = boto3.client("cloudformation", region_name=REGION)
    cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    return {"bucket": DATA_BUCKET}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every SageMaker request body the CLI's boto3 session serialises, by operation."""
    from imagebatch.aws.session import AwsSession

    bodies: list[dict[str, Any]] = []
    original = AwsSession.boto3_session

    def recording(self: AwsSession) -> boto3.Session:
        session = original(self)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            bodies.append({"operation": model.name, **json.loads(params["body"] or b"{}")})

        session.events.register("before-call.sagemaker.*", record)
        return session

    monkeypatch.setattr(AwsSession, "boto3_session", recording)
    yield bodies


def _invoke(*args: str) -> Any:
    return runner.invoke(
        app,
        [
            "endpoint",
            "compile",
            "--model",
            MODEL,
            "--image-uri",
            IMAGE,
            "--buckets",
            "512x512,768x768",
            "--batch-size",
            "4",
            "--job-name",
            "imagebatch-compile-test",
            "--interval",
            "0.01",
            *args,
        ],
    )


def test_the_compile_job_the_stack_allows_goes_out_on_the_wire(
    stack: dict[str, str], sent: list[dict[str, Any]]
) -> None:
    # WHEN compiling against a deployed stack (moto's SageMaker ends the job Completed)
    result = _invoke("--stack", STACK, "--json")
    assert result.exit_code == 0, result.output
    # THEN one CreateTrainingJob went out, as botocore serialised it on the wire (the fields
    # the SageMaker SDK's Estimator sent before the port, each checked below)
    created = [b for b in sent if b["operation"] == "CreateTrainingJob"]
    assert len(created) == 1
    body = created[0]
    assert body["TrainingJobName"] == "imagebatch-compile-test"
    assert body["RoleArn"] == ROLE  # the stack's ModelCompileRoleArn output
    algorithm = body["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == IMAGE
    assert algorithm["ContainerEntrypoint"] == ["python3", "-m", "imagebatch_serving.compile"]
    assert algorithm["ContainerArguments"] == [
        "--model",
        MODEL,
        "--buckets",
        "512x512,768x768",
        "--batch-size",
        "4",
        "--pipeline",
        "sd",
        "--instance-type",
        "inf2",
        "--work",
        "/opt/ml/model",
        "--no-pack",
    ]
    assert body["ResourceConfig"] == {
        "InstanceCount": 1,
        "InstanceType": "ml.trn1.2xlarge",
        "VolumeSizeInGB": 200,
    }
    # no input channel (weights come from the hub); output under the grant's models/
    assert "InputDataConfig" not in body
    assert body["OutputDataConfig"] == {"S3OutputPath": f"s3://{DATA_BUCKET}/models"}
    assert body["StoppingCondition"] == {"MaxRuntimeInSeconds": 4 * 3600}
    assert "HyperParameters" not in body  # the entry point takes arguments, not hyperparameters
    assert "DebugHookConfig" not in body and body["ProfilerConfig"] == {"DisableProfiler": True}
    # AND the job was followed to its end, and the model and deploy command reported
    assert any(b["operation"] == "DescribeTrainingJob" for b in sent)
    out = json.loads(result.stdout)
    key = "models/imagebatch-compile-test/output/model.tar.gz"
    assert out["status"] == "Completed"
    assert out["model_data_url"] == f"s3://{DATA_BUCKET}/{key}"
    argv = shlex.split(out["deploy_command"])
    assert argv[:6] == ["sam", "deploy", "--stack-name", STACK, "--region", REGION]
    overrides = dict(item.split("=", 1) for item in argv[argv.index("--parameter-overrides") + 1 :])
    assert overrides == {
        "EnableSageMaker": "true",
        "SageMakerImageUri": IMAGE,
        "SageMakerModelDataKey": key,
        "SageMakerModelBucket": '""',  # the data bucket: SAM's spelling of an empty value
        "SageMakerShapeBuckets": "512x512,768x768",
        "SageMakerMaxBatch": "4",
        "SageMakerInstanceType": "ml.inf2.xlarge",
    }
    described = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName="imagebatch-compile-test"
    )
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == out["model_data_url"]


def test_a_model_bucket_and_role_need_no_stack_yet(
    aws: None, monkeypatch: pytest.MonkeyPatch, sent: list[dict[str, Any]]
) -> None:
    # GIVEN no stack at all (the first deploy will include the endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    role = "arn:aws:iam::123456789012:role/my-compile-role"
    # WHEN the model goes to a bucket of the user's, with their role, without waiting
    result = _invoke(
        "--stack", "fresh", "--bucket", "my-models", "--role", role, "--no-wait", "--json"
    )
    # THEN the job writes there, and the deploy command points the template at it
    assert result.exit_code == 0, result.output
    (body,) = [b for b in sent if b["operation"] == "CreateTrainingJob"]
    assert body["RoleArn"] == role
    assert body["OutputDataConfig"]["S3OutputPath"] == "s3://my-models/models"
    assert not [b for b in sent if b["operation"] == "DescribeTrainingJob"]
    out = json.loads(result.stdout)
    assert out["status"] == "InProgress"
    assert "SageMakerModelBucket=my-models" in shlex.split(out["deploy_command"])


def test_progress_is_printed_per_status_and_a_failure_is_one_line(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a job whose descriptions go Starting -> Training -> Failed
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    spec = CompileJobSpec(
        model=MODEL,
        buckets=tuple(parse_buckets("512x512")),
        batch_size=1,
        pipeline="sd",
        image_uri=IMAGE,
        role_arn=ROLE,
        bucket=DATA_BUCKET,
        job_name="imagebatch-compile-progress",
    )
    job = CompileJob(boto3.client("sagemaker", region_name=REGION), spec)
    looks: Iterator[dict[str, Any]] = iter(
        [
            {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"},
            {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"},
            {
                "TrainingJobStatus": "InProgress",
                "SecondaryStatus": "Training",
                "SecondaryStatusTransitions": [
                    {"Status": "Starting", "StatusMessage": "Preparing the instances"},
                    {"Status": "Training", "StatusMessage": "compiling 512x512"},
                ],
            },
            {
                "TrainingJobStatus": "Failed",
                "SecondaryStatus": "Failed",
                "FailureReason": "AlgorithmError: neuronx-cc exited 70",
            },
        ]
    )
    monkeypatch.setattr(job, "describe", lambda: JobStatus.from_description(next(looks)))
    seen: list[tuple[str, str]] = []
    # WHEN followed
    final = job.follow(lambda s, _: seen.append((s.secondary, s.message)), sleep=lambda _: None)
    # THEN each change is reported once, and the end carries SageMaker's reason
    assert seen == [("Starting", ""), ("Training", "compiling 512x512"), ("Failed", "")]
    assert final.status == "Failed"
    assert final.failure_reason == "AlgorithmError: neuronx-cc exited 70"


def test_the_deploy_command_names_a_model_bucket_only_when_it_is_not_the_data_bucket() -> None:
    spec = CompileJobSpec(
        model=MODEL,
        buckets=tuple(parse_buckets("1024x1024")),
        batch_size=2,
        pipeline="sdxl",
        image_uri=IMAGE,
        role_arn=ROLE,
        bucket="shared-models",
        job_name="imagebatch-compile-x",
    )
    argv = shlex.split(deploy_command(spec, stack_name="s", data_bucket=DATA_BUCKET, region=REGION))
    assert "SageMakerModelBucket=shared-models" in argv
    assert "SageMakerModelDataKey=models/imagebatch-compile-x/output/model.tar.gz" in argv
    assert "SageMakerShapeBuckets=1024x1024" in argv and "SageMakerMaxBatch=2" in argv
    with pytest.raises(CliError, match="job name"):
        CompileJobSpec(**{**spec.__dict__, "job_name": "has spaces"})


def test_the_command_needs_no_sagemaker_sdk(
    stack: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an install without the SageMaker Python SDK (None in sys.modules: import fails)
    monkeypatch.setitem(sys.modules, "sagemaker", None)
    # WHEN the command runs
    result = _invoke("--stack", STACK, "--no-wait")
    # THEN boto3 alone started the job
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    listed = boto3.client("sagemaker", region_name=REGION).list_training_jobs()
    names = [job["TrainingJobName"] for job in listed["TrainingJobSummaries"]]
    assert names == ["imagebatch-compile-test"]


def test_the_request_matches_botocores_sagemaker_model() -> None:
    # GIVEN a spec with every optional part set
    spec = CompileJobSpec(
        model=MODEL,
        buckets=tuple(parse_buckets("512x512")),
        batch_size=1,
        pipeline="sdxl",
        image_uri=IMAGE,
        role_arn=ROLE,
        bucket=DATA_BUCKET,
        job_name="imagebatch-compile-shape",
        environment={"HF_HUB_ENABLE_HF_TRANSFER": "1"},
    )
    request = create_training_job_request(spec)
    # THEN botocore's own validator finds nothing wrong with it (types, required members,
    # enums' spelling is checked by moto on the wire in the tests above)
    model = boto3.client("sagemaker", region_name=REGION).meta.service_model
    shape = model.operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    assert request["Environment"] == {"HF_HUB_ENABLE_HF_TRANSFER": "1"}
    assert set(request) <= set(shape.members)


def test_compile_refuses_an_instance_without_neuron_cores(stack: dict[str, str]) -> None:
    result = _invoke("--stack", STACK, "--instance-type", "ml.inf2.xlarge")
    assert result.exit_code == ExitCode.USAGE
    assert "ml.trn1.2xlarge" in result.output


DOCS = Path(__file__).resolve().parents[2] / "docs" / "sagemaker.md"
README = DOCS.parents[1] / "README.md"


def _documented_compile(path: Path) -> list[str]:
    """The `imagebatch endpoint compile ...` command of a numbered step, as argv."""
    lines = [
        line for line in path.read_text().splitlines() if "imagebatch endpoint compile --" in line
    ]
    assert lines, f"{path.name} has no compile step"
    command = lines[0][lines[0].index("`") + 1 : lines[0].rindex("`")]
    argv = shlex.split(command.replace('"$IMAGE"', IMAGE).replace("<the same IMAGE>", IMAGE))
    assert argv[0].endswith("imagebatch") and argv[1:3] == ["endpoint", "compile"]
    return argv[1:]


@pytest.mark.parametrize("path", [DOCS, README], ids=lambda p: p.name)
def test_the_documented_compile_step_runs_as_written(
    path: Path, stack: dict[str, str], sent: list[dict[str, Any]]
) -> None:
    # GIVEN the compile step of the walk-through, as a user would paste it
    argv = _documented_compile(path)
    # WHEN run against the stack (samconfig.toml's name) with moto's SageMaker
    result = runner.invoke(app, [*argv, "--interval", "0.01", "--json"])
    # THEN it starts the job and prints a deploy command that enables the endpoint
    assert result.exit_code == 0, result.output
    assert [b["operation"] for b in sent].count("CreateTrainingJob") == 1
    assert "EnableSageMaker=true" in json.loads(result.stdout)["deploy_command"]


def test_the_walk_through_is_numbered_commands_and_its_make_target_exists() -> None:
    text = DOCS.read_text()
    section = text[text.index("## From nothing") : text.index("## Flow")]
    steps = re.findall(r"^(\d+)\. (.*(?:\n   .*)*)", section, flags=re.MULTILINE)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1))
    assert all("`" in body for _, body in steps), "every step names its command"
    makefile = (DOCS.parents[1] / "Makefile").read_text()
    for target in re.findall(r"`make ([a-z-]+)", section + README.read_text()):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target


def test_a_failed_job_exits_1_with_sagemakers_reason_and_no_deploy_command(
    stack: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a job SageMaker reports Failed (moto's jobs always complete, so the look is set)
    failed = JobStatus(
        status="Failed", secondary="Failed", failure_reason="AlgorithmError: out of memory"
    )
    monkeypatch.setattr(CompileJob, "describe", lambda self: failed)
    # WHEN compiling
    result = _invoke("--stack", STACK)
    # THEN exit 1, the reason and where the logs are on one line, and nothing to deploy
    assert result.exit_code == ExitCode.ERROR
    assert "training job imagebatch-compile-test failed: AlgorithmError: out of memory" in (
        result.output
    )
    assert "logStreamNameFilter" in result.output
    assert "sam deploy" not in result.stdout
