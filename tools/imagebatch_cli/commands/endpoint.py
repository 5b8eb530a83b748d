"""`imagebatch endpoint compile`: a model onto the self-hosted endpoint in one command.

It starts a SageMaker training job (compile_job.py says why not a processing job) that runs
`python -m imagebatch_serving.compile` in the Neuron image on Trainium, follows it until
SageMaker has written model.tar.gz (with buckets.json) under the stack's models/, and prints
the `sam deploy` that serves it. Progress goes to stderr, the deploy command to stdout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from imagebatch_cli.compile_job import NEURON_TARGET, TRAINIUM_INSTANCE_TYPES, default_job_name
from imagebatch_cli.deployed_stack import StackOption, deployed_stack, read_samconfig
from imagebatch_cli.exit_codes import ExitCode, fail
from imagebatch_cli.views.console import emit_json, say

if TYPE_CHECKING:
    from imagebatch.aws.session import AwsSession
    from imagebatch_cli.compile_job import CompileJobSpec, JobStatus

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (docs/cli.md).")]


# Kept whole: a typer command whose signature is its options (most of its lines); the job
# itself is compile_job.py.
def compile_model(  # noqa: PLR0917 - typer turns each parameter into an option
    model: Annotated[
        str,
        typer.Option(help="Hugging Face hub id of a diffusers Stable Diffusion model."),
    ],
    image_uri: Annotated[
        str,
        typer.Option(
            help="ECR URI of the containers/neuron image: the job compiles in it and the "
            "endpoint serves from it (the deploy command's SageMakerImageUri)."
        ),
    ],
    buckets: Annotated[
        str, typer.Option(help="Shape buckets to compile (Neuron compiles static shapes).")
    ] = "512x512,768x768",
    batch_size: Annotated[
        int, typer.Option(min=1, max=64, help="Images per pipeline call (SageMakerMaxBatch).")
    ] = 4,
    pipeline: Annotated[str, typer.Option(help="sd (SD 1.x/2.x) or sdxl.")] = "sd",
    stack: StackOption = None,
    role: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Execution role for the job; default: the stack's ModelCompileRoleArn.",
        ),
    ] = None,
    bucket: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Bucket for model.tar.gz (the template's SageMakerModelBucket); default: "
            "the stack's data bucket. With --role too, the stack need not exist yet.",
        ),
    ] = None,
    instance_type: Annotated[
        str, typer.Option(help=f"Trainium instance: {', '.join(TRAINIUM_INSTANCE_TYPES)}.")
    ] = TRAINIUM_INSTANCE_TYPES[0],
    volume_gb: Annotated[int, typer.Option(min=30, help="Job disk (weights + graphs).")] = 200,
    max_hours: Annotated[
        float, typer.Option(min=0.1, max=120, help="SageMaker stops the job after this.")
    ] = 4.0,
    job_name: Annotated[
        str | None,
        typer.Option(show_default=False, help="Default: imagebatch-compile-<UTC time>."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")
    ] = True,
    interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between looks at the job.")
    ] = 30.0,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.01, show_default=False, help="Stop following after N minutes."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compile MODEL for the Inferentia2 endpoint in a SageMaker training job, write
    model.tar.gz to the stack's bucket, and print the `sam deploy` that serves it."""
    from imagebatch.aws.session import aws_errors
    from imagebatch.models.sagemaker_contract import parse_buckets
    from imagebatch_cli.compile_job import CompileJob, CompileJobSpec, log_group_url

    if instance_type not in TRAINIUM_INSTANCE_TYPES:
        fail(
            f"--instance-type {instance_type}: training jobs run Neuron compiles on "
            f"{', '.join(TRAINIUM_INSTANCE_TYPES)} (no inf2 training instances exist)",
            code=ExitCode.USAGE,
        )
    if pipeline not in {"sd", "sdxl"}:
        fail(f"--pipeline {pipeline}: sd or sdxl", code=ExitCode.USAGE)
    try:
        shapes = tuple(parse_buckets(buckets))
    except ValueError as exc:
        fail(f"--buckets: {exc}", code=ExitCode.USAGE)
    target = _target(stack, role, bucket)
    session, stack_name, data_bucket = target.session, target.stack_name, target.data_bucket
    spec = CompileJobSpec(
        model=model,
        buckets=shapes,
        batch_size=batch_size,
        pipeline=pipeline,
        image_uri=image_uri,
        role_arn=role or target.compile_role(),
        bucket=bucket or str(data_bucket),
        job_name=job_name or default_job_name(),
        instance_type=instance_type,
        volume_gb=volume_gb,
        max_run_s=round(max_hours * 3600),
    )
    region = session.region
    # The session's own client: its region and profile, and what the tests record on it.
    with aws_errors("AWS sagemaker"):
        client = session.boto3_session().client("sagemaker", region_name=region)
    job = CompileJob(client, spec)
    with aws_errors(f"starting training job {spec.job_name}"):
        job.start()
    logs = log_group_url(region, spec.job_name)
    say(
        f"started training job {spec.job_name} on {spec.instance_type}: compiling {model} "
        f"for {NEURON_TARGET} at {buckets}, batch {batch_size}",
        err=True,
    )
    say(f"logs: {logs}", err=True)
    if not wait:
        _finish(
            spec,
            None,
            stack_name=stack_name,
            data_bucket=data_bucket,
            region=region,
            as_json=as_json,
        )
        return
    with aws_errors(f"following training job {spec.job_name}"):
        final = job.follow(
            _progress, interval_s=interval, timeout_s=timeout * 60 if timeout else None
        )
    if final.status != "Completed":
        reason = final.failure_reason or final.message or final.secondary
        fail(f"training job {spec.job_name} {final.status.lower()}: {reason} (logs: {logs})")
    _finish(
        spec,
        final,
        stack_name=stack_name,
        data_bucket=data_bucket,
        region=region,
        as_json=as_json,
    )


@dataclass(frozen=True)
class _Target:
    session: AwsSession
    stack_name: str
    data_bucket: str | None
    stack_role: str | None

    def compile_role(self) -> str:
        if not self.stack_role:
            fail(
                f"stack {self.stack_name} has no output ModelCompileRoleArn: deploy this "
                "version of template.yaml first (`sam build && sam deploy`), or pass --role"
            )
        return self.stack_role


def _target(stack: str | None, role: str | None, bucket: str | None) -> _Target:
    """The stack's session, name, data bucket and compile role. With --role and --bucket the
    stack is only named (the deploy command creates it), never read."""
    from imagebatch_cli.settings import aws_session

    config = read_samconfig()
    if role and bucket:
        name = stack or config.stack_name
        if not name:
            fail("name the stack the deploy command creates: --stack NAME (or samconfig.toml)")
        return _Target(aws_session(default_region=config.region), name, None, None)
    deployed = deployed_stack(stack)
    outputs = deployed.outputs
    return _Target(
        deployed.session, outputs.stack_name, outputs.data_bucket, outputs.model_compile_role_arn
    )


def _progress(status: JobStatus, elapsed_s: float) -> None:
    minutes, seconds = divmod(int(elapsed_s), 60)
    detail = f": {status.message}" if status.message else ""
    say(f"[{minutes:3d}m{seconds:02d}s] {status.secondary or status.status}{detail}", err=True)


def _finish(
    spec: CompileJobSpec,
    final: JobStatus | None,
    *,
    stack_name: str,
    data_bucket: str | None,
    region: str,
    as_json: bool,
) -> None:
    from imagebatch_cli.compile_job import deploy_command

    expected = f"s3://{spec.bucket}/{spec.model_data_key}"
    written = final.model_artifacts if final and final.model_artifacts else expected
    if final is not None and written != expected:
        fail(f"SageMaker wrote the model to {written}, not {expected}: deploy it by hand")
    command = deploy_command(spec, stack_name=stack_name, data_bucket=data_bucket, region=region)
    if as_json:
        emit_json(
            {
                "job_name": spec.job_name,
                "status": final.status if final else "InProgress",
                "model_data_url": written,
                "model_bucket": spec.bucket,
                "model_data_key": spec.model_data_key,
                "billable_seconds": final.billable_seconds if final else None,
                "deploy_command": command,
            }
        )
        return
    if final is None:
        say(f"model.tar.gz will be at {written} once the job completes; then:", err=True)
    else:
        billed = f" ({final.billable_seconds} s billed)" if final.billable_seconds else ""
        say(f"model.tar.gz: {written}{billed}; serve it with:", err=True)
    say(command)
