"""`imagebatch local catalog`: one scheduled catalog run through the local AWS.

The local AWS lives as long as one command, but a catalog's point is the next night: the
catalog's state (its CATALOG# ledger partition and latest/ images) is kept in a folder on
disk and put back into the local AWS before the next run, as it would persist in AWS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from imagebatch.aws.catalog_state import catalog_pk
from imagebatch.aws.dynamo_items import from_item, to_item
from imagebatch.catalog.products import CONFIG_NAME, CatalogConfig
from imagebatch.errors import CatalogError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import batch_id_for
from imagebatch_local.cloud.session import LocalAws, LocalRunError, ProgressCallback
from imagebatch_local.template import REGION

SCHEDULE_ID = "CatalogFunctionNightly"
STATE_FILE = "state.jsonl"


@dataclass
class LocalCatalogRun:
    catalog: str
    result: dict[str, Any]
    batch_id: str | None = None
    summary: BatchRecord | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    # The batch's whole ledger partition but the summary (what `imagebatch cost` reads back).
    ledger_records: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # the local stack's region: the batch summary is priced with its prices
    region: str = REGION


def run_local_catalog(
    aws: LocalAws,
    *,
    products: Path,
    config_path: Path,
    state_dir: Path,
    out: Path,
    at: datetime,
    progress: ProgressCallback | None = None,
) -> LocalCatalogRun:
    try:
        config = CatalogConfig.parse(config_path.read_bytes(), str(config_path))
    except CatalogError as exc:
        raise LocalRunError(str(exc)) from None
    if products.suffix != Path(config.products).suffix:
        raise LocalRunError(
            f"{products}: the config names a {Path(config.products).suffix} products file"
        )
    s3 = aws.s3()
    s3.put_object(Bucket=aws.bucket, Key=config.prefix + CONFIG_NAME, Body=config_path.read_bytes())
    s3.put_object(Bucket=aws.bucket, Key=config.products_key, Body=products.read_bytes())
    restore_state(aws, config, state_dir)

    fired = aws.fire_schedule(SCHEDULE_ID, at)
    result = next(r for r in fired["catalogs"] if r["catalog"] == config.name)
    if result.get("problem"):
        raise LocalRunError(f"catalog {config.name}: {result['problem']}")
    run = LocalCatalogRun(catalog=config.name, result=result, region=aws.region)
    if result.get("errors_key"):
        _download(aws, result["errors_key"], state_dir / "errors.jsonl")
    if result.get("manifest_key"):
        body = s3.get_object(Bucket=aws.bucket, Key=result["manifest_key"])["Body"].read()
        content = hashlib.sha256(body).hexdigest()
        run.batch_id = batch_id_for(aws.bucket, result["manifest_key"], content)
        run.summary = aws.wait_for_batch(run.batch_id, progress)
        aws.wait_for_execution(run.batch_id)
        run.images = list(aws.ledger().image_records(run.batch_id))
        run.ledger_records = [
            r for r in aws.ledger().partition(run.batch_id) if r["sk"] != "SUMMARY"
        ]
        run.files = aws.download_outputs(
            run.batch_id, run.summary.output_prefix or "outputs/", out / run.batch_id
        )
    save_state(aws, config, state_dir)
    return run


def _dynamodb(aws: LocalAws) -> Any:
    return aws.client("dynamodb")


def restore_state(aws: LocalAws, config: CatalogConfig, state_dir: Path) -> None:
    """Put the previous runs' variant records and latest images back."""
    state_file = state_dir / STATE_FILE
    if not state_file.exists():
        return
    dynamodb, s3 = _dynamodb(aws), aws.s3()
    for line in state_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        dynamodb.put_item(TableName=aws.table, Item=to_item(record))
        image = state_dir / "latest" / record["sku"] / f"{record['variant']}.png"
        if image.exists():
            s3.put_object(
                Bucket=aws.bucket,
                Key=record["latest_key"],
                Body=image.read_bytes(),
                ContentType="image/png",
            )


def save_state(aws: LocalAws, config: CatalogConfig, state_dir: Path) -> None:
    """Keep the catalog's variant records and latest images for the next local run."""
    state_dir.mkdir(parents=True, exist_ok=True)
    dynamodb = _dynamodb(aws)
    records: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("query").paginate(
        TableName=aws.table,
        # the variants only: a night's manifest record is that night's, not state to carry
        KeyConditionExpression="pk = :pk AND begins_with(sk, :variant)",
        ExpressionAttributeValues={
            ":pk": {"S": catalog_pk(config.name)},
            ":variant": {"S": "VARIANT#"},
        },
    ):
        records.extend(from_item(item) for item in page["Items"])
    (state_dir / STATE_FILE).write_text(
        "".join(json.dumps(record, sort_keys=True) + "\n" for record in records), encoding="utf-8"
    )
    for record in records:
        _download(
            aws,
            record["latest_key"],
            state_dir / "latest" / record["sku"] / f"{record['variant']}.png",
        )


def _download(aws: LocalAws, key: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aws.s3().download_file(aws.bucket, key, str(path))
