"""`imagebatch check BATCH --stack NAME` and `imagebatch local check BATCH`: the invariants a
finished batch must hold (imagebatch.costs.invariants), one line per violation.

Against a deployed stack it only reads (the ledger, the bucket's outputs and reports);
against a local run it reads what `local run` left under --out: the ledger export, the
images, the reports and evidence.json (the endpoint's windows, what the local Bedrock made).
Exit 0: every invariant holds; 1: some do not (each printed) or the batch could not be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from imagebatch.costs.invariants import (
    INVARIANTS,
    BatchEvidence,
    Violation,
    check_batch,
    evidence_from_partition,
    redrive_ids,
)
from imagebatch_cli.deployed_stack import StackOption
from imagebatch_cli.exit_codes import ExitCode, fail
from imagebatch_cli.views.console import console, err_console

BatchArgument = Annotated[str, typer.Argument(help="The batch id.", show_default=False)]
CheckOutOption = Annotated[Path, typer.Option(help="Where `local run` put the batch (its --out).")]
#: What `local run` writes beside the ledger export for the checker (local_evidence_path).
EVIDENCE_FILE = "evidence.json"


def check(batch_id: BatchArgument, stack: StackOption = None) -> None:
    """Check a deployed batch's invariants (reads only): every image recorded once with its
    PNG, every charge added up, no hold left, within its cap, redrive = the failed images."""
    from imagebatch.aws.batch_evidence import read_batch_evidence
    from imagebatch.aws.session import aws_errors
    from imagebatch_cli.deployed_stack import deployed_stack

    deployed = deployed_stack(stack)
    with aws_errors(f"reading batch {batch_id}"):
        evidence = read_batch_evidence(
            deployed.session.dynamodb(),
            deployed.outputs.ledger_table,
            deployed.session.s3(),
            deployed.outputs.data_bucket,
            batch_id,
        )
    _report(check_batch(evidence))


def local_check(batch_id: BatchArgument, out: CheckOutOption = Path("out")) -> None:
    """Check the invariants of a batch `imagebatch local run` left under --out."""
    _report(check_batch(read_local_evidence(out, batch_id)))


def read_local_evidence(out: Path, batch_id: str) -> BatchEvidence:
    """The batch as `local run` left it in <out>/<batch-id>/."""
    from imagebatch_local.ledger_export import ledger_export_path

    from imagebatch.aws.batch_items import record_from_plain

    export = ledger_export_path(out, batch_id)
    if not export.is_file():
        fail(f"{export}: no such file (run `imagebatch local run` with --out {out} first)")
    records = [json.loads(line) for line in export.read_text("utf-8").splitlines() if line]
    summary = record_from_plain(records[0])
    folder = export.parent
    prefix = f"{summary.output_prefix or 'outputs/'}{batch_id}/"
    redrive = folder / "reports" / "redrive.jsonl"
    extra: dict[str, Any] = {}
    if (folder / EVIDENCE_FILE).is_file():
        extra = json.loads((folder / EVIDENCE_FILE).read_text("utf-8"))
    return evidence_from_partition(
        batch_id,
        summary,
        records[1:],
        output_keys=[prefix + path.name for path in sorted(folder.glob("*.png"))],
        redrive_ids=redrive_ids(redrive.read_text("utf-8").splitlines())
        if redrive.is_file()
        else None,
        windows=extra.get("windows", []),
        paid_images=extra.get("paid_images"),
    )


def _report(violations: list[Violation]) -> None:
    for violation in violations:
        console.print(violation.line(), markup=False, highlight=False, soft_wrap=True)
    broken = len({v.invariant for v in violations})
    err_console.print(
        f"{len(INVARIANTS) - broken} of {len(INVARIANTS)} invariants hold; "
        f"{len(violations)} violation(s)",
        markup=False,
        highlight=False,
    )
    if violations:
        raise typer.Exit(ExitCode.ERROR)
