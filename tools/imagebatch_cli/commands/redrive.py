"""`imagebatch redrive`: a manifest of exactly a batch's failed images, from its report.

Finalize writes reports/<batch-id>/redrive.jsonl (the batch header, then one item per failed
image with its own id, prompt, size and seed, so a redriven image is the image that was
asked for) and failed.jsonl (each failed image's class and reason). Redrive reads both, from
the local export of `imagebatch local run` or from the data bucket, and keeps the classes
asked for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imagebatch.models.records import FailureClass
from imagebatch_cli.deployed_stack import StackOption
from imagebatch_cli.exit_codes import fail
from imagebatch_cli.views.console import console, say

if TYPE_CHECKING:
    from imagebatch.aws.deployed import DataBucket

REDRIVE_REPORT = "redrive.jsonl"
FAILED_REPORT = "failed.jsonl"


class RedriveError(Exception):
    pass


@dataclass
class RedriveManifest:
    lines: list[str]
    classes: Counter[str] = field(default_factory=Counter)

    @property
    def items(self) -> int:
        return max(0, len(self.lines) - 1)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in self.lines), encoding="utf-8")
        return path


def build_redrive(
    redrive_lines: Iterable[str],
    failed_lines: Iterable[str],
    classes: set[FailureClass] | None = None,
) -> RedriveManifest:
    """The report's redrive manifest, keeping only images whose failure class is in `classes`."""
    class_of = {}
    for line in failed_lines:
        if line.strip():
            record = json.loads(line)
            class_of[record["image_id"]] = record.get("failure_class") or "unknown"
    lines = [line for line in redrive_lines if line.strip()]
    if not lines or "batch" not in json.loads(lines[0]):
        raise RedriveError("the redrive report does not start with a batch header")
    kept = [lines[0]]
    counted: Counter[str] = Counter()
    for line in lines[1:]:
        image_id = json.loads(line)["id"]
        failure_class = class_of.get(image_id, "unknown")
        if classes is None or failure_class in classes:
            kept.append(line)
            counted[failure_class] += 1
    return RedriveManifest(kept, counted)


def read_local_reports(out: Path, batch_id: str) -> tuple[list[str], list[str]]:
    reports = out / batch_id / "reports"
    redrive = reports / REDRIVE_REPORT
    if not redrive.exists():
        if (reports / "summary.json").exists():
            return [], []
        raise RedriveError(f"no report at {reports}; run `imagebatch local run` or pass --bucket")
    failed = reports / FAILED_REPORT
    return (
        redrive.read_text(encoding="utf-8").splitlines(),
        failed.read_text(encoding="utf-8").splitlines() if failed.exists() else [],
    )


def read_s3_reports(bucket: DataBucket, batch_id: str) -> tuple[list[str], list[str]]:
    redrive = bucket.report_lines(batch_id, REDRIVE_REPORT)
    if redrive is None:
        if not bucket.has_report(batch_id, "summary.json"):
            raise RedriveError(
                f"no report for batch {batch_id} in s3://{bucket.bucket}/reports/ (is it finished?)"
            )
        return [], []
    return redrive, bucket.report_lines(batch_id, FAILED_REPORT) or []


def redrive(  # noqa: PLR0917 - typer turns each parameter into an option
    batch_id: str,
    stack: StackOption = None,
    out: Annotated[Path, typer.Option(help="Where `local run` exported the batch.")] = Path("out"),
    bucket: Annotated[
        str | None,
        typer.Option(help="Read the report from this data bucket instead (AWS credentials)."),
    ] = None,
    failure_class: Annotated[
        list[FailureClass] | None,
        typer.Option("--class", help="Only images that failed with this class (repeatable)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Manifest to write; default redrive-<batch-id>.jsonl.")
    ] = None,
    upload: Annotated[
        bool,
        typer.Option(
            help="Upload it under manifests/ of --bucket (or --stack's), which starts the redrive."
        ),
    ] = False,
) -> None:
    """Write a manifest of exactly a batch's failed images; uploading it runs only those."""
    if upload and not (bucket or stack):
        fail("--upload needs --stack or --bucket", code=2)
    data_bucket = _data_bucket(bucket, stack) if bucket or stack else None
    try:
        if data_bucket is not None:
            redrive_lines, failed_lines = read_s3_reports(data_bucket, batch_id)
        else:
            redrive_lines, failed_lines = read_local_reports(out, batch_id)
        if not redrive_lines:
            console.print(f"batch {batch_id} has no failed images: nothing to redrive")
            return
        manifest = build_redrive(
            redrive_lines, failed_lines, set(failure_class) if failure_class else None
        )
    except RedriveError as exc:
        fail(exc)
    if manifest.items == 0:
        console.print(f"no failed image of batch {batch_id} has the classes asked for")
        return
    target = manifest.write(output or Path(f"redrive-{batch_id}.jsonl"))
    by_class = ", ".join(f"{n} {c}" for c, n in sorted(manifest.classes.items()))
    say(f"{manifest.items} failed image(s) ({by_class}) -> {target}")
    if upload and data_bucket is not None:
        key, new_batch = data_bucket.upload_manifest(target)
        say(f"uploaded to s3://{data_bucket.bucket}/{key}: batch {new_batch} has started")
        say(f"follow it: imagebatch watch {new_batch}" + (f" --stack {stack}" if stack else ""))
    elif data_bucket is None:
        say(f"run it: imagebatch local run {target}")


def _data_bucket(bucket: str | None, stack: str | None) -> DataBucket:
    """--bucket as given, or the --stack's DataBucketName output."""
    from imagebatch.aws.deployed import DataBucket
    from imagebatch_cli.deployed_stack import deployed_stack
    from imagebatch_cli.settings import aws_session

    if bucket:
        return DataBucket(aws_session().s3(), bucket)
    deployed = deployed_stack(stack, use_samconfig=False)
    return DataBucket(deployed.session.s3(), deployed.outputs.data_bucket)
