"""The local ledger kept on disk: the local AWS lives for one command, its ledger outlives it.

`local run` and `local catalog` write each batch's whole ledger partition, summary first, to
<out>/<batch-id>/ledger.jsonl; `cost` reads one back and `batches`/`costs` load all of them
into a local table for the query handler (http_api.local_api).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagebatch.aws.batch_items import record_attributes, record_from_plain
from imagebatch.models.batch_record import BatchRecord

LEDGER_EXPORT = "ledger.jsonl"


def ledger_export_path(out: Path, batch_id: str) -> Path:
    return out / batch_id / LEDGER_EXPORT


def write_ledger_export(path: Path, summary: BatchRecord, others: list[dict[str, Any]]) -> None:
    """The batch's whole ledger partition, summary first (`batches`/`costs` read it back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in [record_attributes(summary), *others]:
            handle.write(json.dumps(record, default=str) + "\n")


def read_ledger_export(path: Path) -> tuple[BatchRecord, list[dict[str, Any]]]:
    """(the batch summary, its image records) from one export."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    images = [r for r in records[1:] if str(r.get("sk", "IMAGE#")).startswith("IMAGE#")]
    return record_from_plain(records[0]), images


def ledger_exports(out: Path) -> Iterator[dict[str, Any]]:
    """Every record of every batch exported under `out`."""
    for export in sorted(out.glob(f"*/{LEDGER_EXPORT}")):
        for line in export.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)
