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
from typing import TYPE_CHECKING

from imagebatch.aws.s3_store import report_key
from imagebatch.models.records import FailureClass

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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


def read_s3_reports(s3: S3Client, bucket: str, batch_id: str) -> tuple[list[str], list[str]]:
    def lines(name: str) -> list[str] | None:
        try:
            body = s3.get_object(Bucket=bucket, Key=report_key(batch_id, name))["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return body.decode("utf-8").splitlines()

    redrive = lines(REDRIVE_REPORT)
    if redrive is None:
        try:
            s3.head_object(Bucket=bucket, Key=report_key(batch_id, "summary.json"))
        except s3.exceptions.ClientError as exc:
            raise RedriveError(
                f"no report for batch {batch_id} in s3://{bucket}/reports/ (is it finished?)"
            ) from exc
        return [], []
    return redrive, lines(FAILED_REPORT) or []
