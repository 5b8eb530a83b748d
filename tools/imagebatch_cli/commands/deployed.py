"""`imagebatch submit` and `imagebatch watch`: a batch on a deployed stack, from the terminal.

submit checks the manifest as ingest will (validate's check_manifest), uploads it under the
stack's manifests/ (which starts the batch) and prints its batch id; watch follows the batch
summary in the stack's ledger (one GetItem per poll) with a progress bar until it ends, and
exits with the batch's status (exit_codes.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from imagebatch_cli.commands._args import ManifestArgument, SampleOption, manifest_path
from imagebatch_cli.deployed_stack import StackOption, deployed_stack
from imagebatch_cli.exit_codes import ExitCode, exit_code_for_status, fail
from imagebatch_cli.views.console import console, emit_json, err_console, say

if TYPE_CHECKING:
    from imagebatch.models.batch_record import BatchRecord
    from imagebatch_cli.deployed_stack import DeployedStack

FINAL = {"SUCCEEDED", "PARTIAL", "FAILED", "REJECTED"}
# How long watch waits for ingest to record a batch it has never seen (a wrong id, or an
# upload ingest never got) before it says so.
INGEST_WAIT_S = 300.0
IntervalOption = Annotated[
    float, typer.Option(min=0.05, help="Seconds between looks at the batch summary.")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(min=0.01, help="Give up after this many minutes (exit 1).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (docs/cli.md).")]


def submit(  # noqa: PLR0917 - typer turns each parameter into an option
    manifest: ManifestArgument = None,
    sample: SampleOption = None,
    stack: StackOption = None,
    follow: Annotated[
        bool, typer.Option("--watch", help="Then follow the batch until it ends (as watch).")
    ] = False,
    interval: IntervalOption = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Upload MANIFEST to a deployed stack's bucket, which starts the batch; the stack is
    --stack or samconfig.toml's. A manifest ingest would reject is not uploaded (exit 5)."""
    from imagebatch.aws.deployed import DataBucket
    from imagebatch_cli.commands.validate import DEFAULT_CHUNK_SIZE, check_manifest, error_lines

    manifest = manifest_path(manifest, sample)
    deployed = deployed_stack(stack)
    outputs = deployed.outputs
    # as ingest on this stack: its deployed parameters (the endpoint, its model and sizes)
    report = check_manifest(
        manifest,
        region=outputs.region,
        chunk_size=int(outputs.parameters.get("ChunkSize", DEFAULT_CHUNK_SIZE)),
        buckets=None,
        parameters=outputs.parameters,
        made=deployed.ledger(),
    )
    for line in error_lines(report.manifest, report.errors):
        say(line, err=True)
    if report.rejection:
        fail(f"not uploaded: ingest would reject it: {report.rejection}", code=ExitCode.REJECTED)
    bucket = DataBucket(deployed.session.s3(), outputs.data_bucket)
    key, batch_id = bucket.upload_manifest(manifest)
    if not as_json:
        from imagebatch_cli.views.estimate import reuse_line

        say(f"uploaded {manifest} -> s3://{bucket.bucket}/{key} (stack {outputs.stack_name})")
        say(reuse_line(report.images_reused, report.images, report.reuse_saved_micro_usd or 0))
        say(f"batch {batch_id}")
    if follow:
        _watch(deployed, batch_id, interval=interval, timeout_min=None, as_json=as_json)
        return
    if as_json:
        emit_json(
            {
                "batch_id": batch_id,
                "stack": outputs.stack_name,
                "bucket": bucket.bucket,
                "key": key,
            }
        )
    else:
        say(f"follow it: imagebatch watch {batch_id} --stack {outputs.stack_name}", err=True)


def watch(
    batch_id: str,
    stack: StackOption = None,
    interval: IntervalOption = 5.0,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a batch on a deployed stack with a progress bar until it ends; exit 0 all made,
    3 PARTIAL, 4 FAILED, 5 REJECTED."""
    _watch(deployed_stack(stack), batch_id, interval=interval, timeout_min=timeout, as_json=as_json)


def _watch(
    deployed: DeployedStack,
    batch_id: str,
    *,
    interval: float,
    timeout_min: float | None,
    as_json: bool,
) -> None:
    from imagebatch.aws.ledger import Ledger
    from imagebatch.aws.session import aws_errors
    from imagebatch_cli.views.progress import image_progress

    ledger = Ledger(deployed.session.dynamodb(), deployed.outputs.ledger_table)
    started = time.monotonic()
    deadline = started + timeout_min * 60 if timeout_min is not None else None
    summary: BatchRecord | None = None
    with image_progress(err_console) as progress:
        while deadline is None or time.monotonic() < deadline:
            with aws_errors(f"reading batch {batch_id}"):
                summary = ledger.get_batch(batch_id)
            if summary is None and time.monotonic() - started > INGEST_WAIT_S:
                break
            if summary is not None:
                done = summary.images_succeeded + summary.images_failed
                progress(done, summary.images_total)
                if summary.status in FINAL:
                    break
            time.sleep(interval)
    if summary is None:
        fail(
            f"no batch {batch_id} in {deployed.outputs.ledger_table}: is the id right, and did "
            "ingest run? "
            f"(its log group: /aws/lambda/{deployed.outputs.stack_name}-IngestFunction-*)"
        )
    status = str(summary.status)
    if status not in FINAL:
        fail(f"batch {batch_id} is still {status} after {timeout_min:g} min")
    _report(summary, deployed.outputs.region, as_json)
    raise typer.Exit(exit_code_for_status(status))


def _report(summary: BatchRecord, region: str, as_json: bool) -> None:
    from imagebatch.api.responses import batch_summary
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch_cli.views.report import print_cost

    if as_json:
        # emit_json dumps a model given whole, not one nested in a dict (json's default=str
        # would print its repr as a string)
        shaped = batch_summary(summary, load_aws_prices().region(region))
        emit_json({"batch": shaped.model_dump(mode="json")})
        return
    print_cost(console, summary, [], region)
    if summary.images_failed:
        say(f"failed images: imagebatch redrive {summary.batch_id} --stack STACK --upload")


def stack_outputs(stack: StackOption = None, as_json: JsonOption = False) -> None:
    """Show what the CLI reads from a deployed stack: bucket, ledger table, query API."""
    outputs = deployed_stack(stack).outputs
    if as_json:
        emit_json(outputs)
        return
    for name, value in outputs.model_dump().items():
        say(f"{name}: {value}")
