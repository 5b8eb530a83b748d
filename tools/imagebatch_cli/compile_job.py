"""The SageMaker training job that compiles a model for the endpoint (`imagebatch endpoint
compile`): boto3's `sagemaker` client, CreateTrainingJob and DescribeTrainingJob.

Why a training job and not a processing job: the compile must run on Neuron hardware in the
Neuron image, and CreateProcessingJob's ProcessingInstanceType has no inf2 or trn instance
while CreateTrainingJob's TrainingInstanceType has ml.trn1.2xlarge and up (botocore's
SageMaker service model). A training job also packs /opt/ml/model into model.tar.gz at
`<output path>/<job>/output/model.tar.gz` itself, which is the archive layout the Neuron
backend reads (buckets.json at the root); Trainium has the same NeuronCore-v2 as inf2, and
`--instance-type inf2` makes neuronx-cc compile for the endpoint's chip.

The job runs `python -m imagebatch_serving.compile` (ContainerEntrypoint/ContainerArguments)
in the image the endpoint will serve, so compile and serving share one Neuron SDK.

Why not the SageMaker Python SDK (as before): it was used for these two calls only, yet
needed a venv of its own (it pins packaging, rich, attrs and importlib-metadata below the
project's). The request below is the one its Estimator sent (`fit(wait=False)` with
`disable_profiler=True, debugger_hook_config=False`), field for field; the client is injected,
so this module imports no boto3 (tools/ holds none outside local/).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagebatch.models.sagemaker_contract import ShapeBucket
from imagebatch_cli.exit_codes import CliError

# CreateTrainingJob's Trainium instance types (botocore TrainingInstanceType); no inf2 there.
TRAINIUM_INSTANCE_TYPES = (
    "ml.trn1.2xlarge",
    "ml.trn1.32xlarge",
    "ml.trn1n.32xlarge",
    "ml.trn2.48xlarge",
)
MODEL_PREFIX = "models"
# The endpoint instance a model compiled for inf2 is served on (template.yaml AllowedValues).
ENDPOINT_INSTANCE_TYPE = "ml.inf2.xlarge"
NEURON_TARGET = "inf2"
FINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
# Where the container writes the compiled folders; SageMaker tars it when the job succeeds.
JOB_MODEL_DIR = "/opt/ml/model"
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def default_job_name(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"imagebatch-compile-{stamp}"


@dataclass(frozen=True)
class CompileJobSpec:
    """Everything the CreateTrainingJob request says."""

    model: str
    buckets: tuple[ShapeBucket, ...]
    batch_size: int
    pipeline: str
    image_uri: str
    role_arn: str
    bucket: str
    job_name: str
    instance_type: str = TRAINIUM_INSTANCE_TYPES[0]
    volume_gb: int = 200
    max_run_s: int = 4 * 3600
    environment: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.buckets:
            raise CliError("give at least one shape bucket: Neuron compiles static shapes")
        if not _JOB_NAME.match(self.job_name):
            raise CliError(
                f"job name {self.job_name!r}: 1-63 letters, digits and hyphens (SageMaker)"
            )

    def container_arguments(self) -> list[str]:
        """The compile entry point's command line inside the job."""
        return [
            "--model",
            self.model,
            "--buckets",
            ",".join(str(b) for b in self.buckets),
            "--batch-size",
            str(self.batch_size),
            "--pipeline",
            self.pipeline,
            "--instance-type",
            NEURON_TARGET,
            "--work",
            JOB_MODEL_DIR,
            "--no-pack",
        ]

    @property
    def output_path(self) -> str:
        return f"s3://{self.bucket}/{MODEL_PREFIX}"

    @property
    def model_data_key(self) -> str:
        """Where SageMaker puts the archive: <output path>/<job name>/output/model.tar.gz."""
        return f"{MODEL_PREFIX}/{self.job_name}/output/model.tar.gz"


@dataclass(frozen=True)
class JobStatus:
    """One look at the job (DescribeTrainingJob)."""

    status: str
    secondary: str
    message: str = ""
    failure_reason: str = ""
    model_artifacts: str = ""
    billable_seconds: int | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> JobStatus:
        secondary = str(described.get("SecondaryStatus", ""))
        # The message of the transition into the current secondary status, if listed.
        messages = [
            str(t.get("StatusMessage", ""))
            for t in described.get("SecondaryStatusTransitions") or []
            if t.get("Status") == secondary
        ]
        billable = described.get("BillableTimeInSeconds")
        return cls(
            status=str(described.get("TrainingJobStatus", "")),
            secondary=secondary,
            message=messages[-1] if messages else "",
            failure_reason=str(described.get("FailureReason", "")),
            model_artifacts=str(described.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")),
            billable_seconds=int(billable) if billable is not None else None,
        )


#: The compile entry point inside the job's container (the endpoint's own image).
ENTRYPOINT = ("python3", "-m", "imagebatch_serving.compile")


def create_training_job_request(spec: CompileJobSpec) -> dict[str, Any]:
    """CreateTrainingJob's parameters for the spec (botocore's SageMaker model names them).

    No InputDataConfig (the weights come from the hub inside the job) and no HyperParameters
    (the entry point takes arguments). The profiler is disabled and no DebugHookConfig is
    sent: with either, SageMaker would add profiler and rule jobs billed beside the compile.
    """
    request: dict[str, Any] = {
        "TrainingJobName": spec.job_name,
        "AlgorithmSpecification": {
            "TrainingImage": spec.image_uri,
            "TrainingInputMode": "File",
            "ContainerEntrypoint": list(ENTRYPOINT),
            "ContainerArguments": spec.container_arguments(),
        },
        "RoleArn": spec.role_arn,
        "OutputDataConfig": {"S3OutputPath": spec.output_path},
        "ResourceConfig": {
            "InstanceCount": 1,
            "InstanceType": spec.instance_type,
            "VolumeSizeInGB": spec.volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_run_s},
        "ProfilerConfig": {"DisableProfiler": True},
    }
    if spec.environment:
        request["Environment"] = dict(spec.environment)
    return request


class CompileJob:
    """Starts the training job and follows it, over an injected boto3 `sagemaker` client."""

    def __init__(self, client: Any, spec: CompileJobSpec) -> None:
        self.spec = spec
        self._client = client

    def start(self) -> None:
        self._client.create_training_job(**create_training_job_request(self.spec))

    def describe(self) -> JobStatus:
        described: dict[str, Any] = self._client.describe_training_job(
            TrainingJobName=self.spec.job_name
        )
        return JobStatus.from_description(described)

    def follow(
        self,
        on_change: Callable[[JobStatus, float], None],
        *,
        interval_s: float = 30.0,
        timeout_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> JobStatus:
        """Poll until the job ends; `on_change(status, elapsed)` at each new (secondary)
        status. A timeout leaves the job running and says so."""
        started = clock()
        seen: tuple[str, str] | None = None
        while True:
            current = self.describe()
            elapsed = clock() - started
            if (current.status, current.secondary) != seen:
                seen = (current.status, current.secondary)
                on_change(current, elapsed)
            if current.done:
                return current
            if timeout_s is not None and elapsed >= timeout_s:
                state = current.secondary or current.status
                raise CliError(
                    f"training job {self.spec.job_name} is still {state} after "
                    f"{elapsed / 60:.0f} min; it keeps running (see it in the SageMaker "
                    "console)"
                )
            sleep(interval_s)


def log_group_url(region: str, job_name: str) -> str:
    return (
        f"https://console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/"
        f"log-group/$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3D{job_name}"
    )


def deploy_command(
    spec: CompileJobSpec,
    *,
    stack_name: str,
    data_bucket: str | None,
    region: str,
) -> str:
    """The `sam deploy` that serves this model. Parameters it does not name keep their values
    (sam deploy sends UsePreviousValue for them on an existing stack: samcli
    DeployContext.merge_parameters); SageMakerModelBucket is always named, so a model moved
    back into the data bucket does not keep an older bucket. SAM's override parser takes no
    bare `Key=`; an empty value is written `Key=""`."""
    model_bucket = '""' if spec.bucket == data_bucket else spec.bucket
    overrides: Sequence[str] = [
        "EnableSageMaker=true",
        f"SageMakerImageUri={spec.image_uri}",
        f"SageMakerModelDataKey={spec.model_data_key}",
        f"SageMakerModelBucket={model_bucket}",
        f"SageMakerShapeBuckets={','.join(str(b) for b in spec.buckets)}",
        f"SageMakerMaxBatch={spec.batch_size}",
        f"SageMakerInstanceType={ENDPOINT_INSTANCE_TYPE}",
    ]
    return shlex.join(
        [
            "sam",
            "deploy",
            "--stack-name",
            stack_name,
            "--region",
            region,
            "--parameter-overrides",
            *overrides,
        ]
    )
