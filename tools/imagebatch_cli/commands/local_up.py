"""`imagebatch local up`: a local stack that stays up until Ctrl-C (or SIGTERM).

The same local AWS as `local run` (imagebatch_local/cloud/session.py), kept up and served
(imagebatch_local/cloud/local_up.py): other terminals use it with `--stack local` as they use
a deployed stack (`submit`, `watch`, `batches`, `cost`, `costs`, `redrive --upload`, `stack`),
found through the descriptor it writes in the run directory (stack_descriptor.py). A denied
call or a failed function is printed as it happens, and fails the exit code at the end, since
on AWS that path would be broken.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from imagebatch_cli.commands._args import (
    ParametersOption,
    TemplateOption,
    default_region,
    resolved_template,
)
from imagebatch_cli.commands.local import (
    BackendOption,
    ChunkSizeOption,
    MaxBatchOption,
    RegionOption,
    RendererOption,
    RenderSizeOption,
    RunModelDirOption,
    ShapeBucketsOption,
    StepsOption,
    VerboseOption,
    _parameters,
)
from imagebatch_cli.exit_codes import fail
from imagebatch_cli.views.console import err_console, say

if TYPE_CHECKING:
    from imagebatch_local.cloud.local_up import LocalUp

PortOption = Annotated[
    int,
    typer.Option(min=0, max=65535, help="The local AWS's port (moto server); 0: any free one."),
]
ApiPortOption = Annotated[
    int, typer.Option(min=0, max=65535, help="The query API's port; 0: any free one.")
]
RunDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Where the stack descriptor (local-stack.json) and lambda.log go; commands with "
        "--stack local look there too when IMAGEBATCH_RUN_DIR names it. "
        "Default: IMAGEBATCH_RUN_DIR, else ~/.imagebatch.",
        show_default=False,
    ),
]
# How often the foreground looks for problems to report while it waits for a signal.
_LOOK_S = 0.5


def local_up(  # noqa: PLR0917 - typer turns each parameter into an option
    port: PortOption = 0,
    api_port: ApiPortOption = 0,
    run_dir: RunDirOption = None,
    model_dir: RunModelDirOption = None,
    template: TemplateOption = None,
    render_size: RenderSizeOption = 64,
    steps: StepsOption = 1,
    chunk_size: ChunkSizeOption = None,
    parameter_overrides: ParametersOption = None,
    renderer: RendererOption = "tiny",
    backend: BackendOption = "bedrock",
    shape_buckets: ShapeBucketsOption = "",
    max_batch: MaxBatchOption = 4,
    region: RegionOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Start the local AWS and keep it up until Ctrl-C: use it from other terminals with
    --stack local (submit, watch, batches, cost, costs, redrive, stack). Exit 0 when stopped
    and nothing AWS would refuse happened; 1 otherwise."""
    from imagebatch_local.cloud.local_up import local_up as serve
    from imagebatch_local.cloud.session import LocalOptions, LocalRunError
    from imagebatch_local.lambda_logs import LAMBDA_LOG, lambda_output
    from imagebatch_local.stack_descriptor import LocalStackDescriptorError, default_run_dir

    if backend not in {"bedrock", "sagemaker"}:
        raise typer.BadParameter("--backend is bedrock or sagemaker")
    folder = run_dir or default_run_dir()
    folder.mkdir(parents=True, exist_ok=True)
    overrides = _parameters(parameter_overrides)
    options = LocalOptions(
        template=resolved_template(template),
        model_dir=model_dir,
        render_short_side=render_size,
        render_steps=steps,
        parameter_overrides={
            **overrides,
            **({"ChunkSize": str(chunk_size)} if chunk_size else {}),
        },
        renderer=renderer,
        backend=backend,
        shape_buckets=shape_buckets,
        max_batch=max_batch,
        region=region or default_region(),
        port=port,
    )
    stop = _stop_on_signals()
    try:
        with (
            lambda_output(verbose=verbose, live=folder / LAMBDA_LOG),
            serve(options, folder, api_port) as up,
        ):
            _announce(up, folder / LAMBDA_LOG, run_dir)
            problems = _wait_reporting(up, stop)
    except (LocalRunError, LocalStackDescriptorError) as exc:
        fail(exc)
    say("local stack stopped; descriptor removed", err=True)
    if problems:
        fail(f"{problems} problem(s) AWS would have refused or failed, printed above")


def _stop_on_signals() -> threading.Event:
    """SIGINT (Ctrl-C) and SIGTERM set the event the foreground waits on, so both stop the
    stack the same clean way (a KeyboardInterrupt could land inside a teardown)."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        del frame
        err_console.print(f"{signal.Signals(signum).name}: stopping the local stack")
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


def _announce(up: LocalUp, log: Path, run_dir: Path | None) -> None:
    described = up.descriptor
    lines = [
        f"local stack up (pid {described.pid}, region {described.region})",
        f"  AWS endpoint   {described.endpoint_url}  (access key local / secret local)",
        f"  bucket         {described.data_bucket}",
        f"  ledger table   {described.ledger_table}",
        f"  query API      {described.query_api_url}",
        f"  descriptor     {up.descriptor_path}",
        f"  Lambda logs    {log}",
        "from another terminal"
        + (f" (with IMAGEBATCH_RUN_DIR={run_dir})" if run_dir is not None else "")
        + ": imagebatch submit MANIFEST --stack local --watch; "
        "imagebatch cost BATCH_ID --stack local; Ctrl-C here stops it",
    ]
    for line in lines:
        say(line, err=True)


def _wait_reporting(up: LocalUp, stop: threading.Event) -> int:
    """Wait for the stop signal, printing each problem once as it appears: a call a role was
    denied, an S3 notification that could not invoke ingest, a function that raised; with
    the SageMaker backend, scale its endpoint in when no batch runs. Returns how many
    problems there were."""
    from imagebatch_local.cloud.local_up import scale_in_if_idle
    from imagebatch_local.cloud.session import LocalRunError

    aws, problems, seen_invocations, seen_notifications = up.aws, 0, 0, 0
    while not stop.wait(_LOOK_S):
        if scale_in_if_idle(aws):
            say("no batch running: the local endpoint scaled in", err=True)
        try:
            aws.raise_if_denied()
        except LocalRunError as exc:
            problems += 1
            say(f"problem: {exc}", err=True)
        for error in aws.notification_errors[seen_notifications:]:
            problems += 1
            say(f"problem: ingest was not invoked: {error!r}", err=True)
        seen_notifications = len(aws.notification_errors)
        invocations = list(aws.runtime.invocations)
        for invocation in invocations[seen_invocations:]:
            if invocation.errored:
                # a retried chunk's error is the state machine's to retry: shown, not counted
                say(
                    f"{invocation.function} raised {invocation.error_type}: "
                    f"{invocation.error_message}",
                    err=True,
                )
        seen_invocations = len(invocations)
    return problems
