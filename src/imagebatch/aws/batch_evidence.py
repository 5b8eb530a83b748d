"""Reads what the invariant checker (costs.invariants) needs about one batch: the ledger
partition, the keys under its outputs, its redrive.jsonl and the windows of the endpoints it
used. Only reads, so `imagebatch check` is safe against a deployed stack; clients injected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagebatch.aws.batch_items import record_from_plain
from imagebatch.aws.dynamo_items import SUMMARY_SK
from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.ledger_holds import BudgetHolds
from imagebatch.aws.s3_store import BatchStore, report_key
from imagebatch.costs.invariants import BatchEvidence, evidence_from_partition, redrive_ids

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client


def read_batch_evidence(
    dynamodb: DynamoDBClient,
    table: str,
    s3: S3Client,
    bucket: str,
    batch_id: str,
    *,
    paid_images: int | None = None,
) -> BatchEvidence:
    """The batch as the checker sees it; `paid_images` where the caller can count them."""
    partition = list(BudgetHolds(dynamodb, table).partition(batch_id))
    summary_item = next((r for r in partition if r["sk"] == SUMMARY_SK), None)
    summary = record_from_plain(summary_item) if summary_item else None
    store = BatchStore(s3, bucket)
    prefix = (summary.output_prefix if summary else None) or "outputs/"
    output_keys = list(store.list_keys(f"{prefix}{batch_id}/"))
    lines: list[str] | None = None
    key = report_key(batch_id, "redrive.jsonl")
    if any(k == key for k in store.list_keys(key)):
        lines = store.get_bytes(key).decode("utf-8").splitlines()
    endpoints = sorted({str(r["endpoint"]) for r in partition if r.get("endpoint")})
    usage = EndpointUsageStore(dynamodb, table)
    windows: list[dict[str, Any]] = [w for e in endpoints for w in usage.windows(e)]
    return evidence_from_partition(
        batch_id,
        summary,
        [r for r in partition if r["sk"] != SUMMARY_SK],
        output_keys=output_keys,
        redrive_ids=redrive_ids(lines),
        windows=windows,
        paid_images=paid_images,
    )
