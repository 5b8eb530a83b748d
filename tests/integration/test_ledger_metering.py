"""The ledger's own writes are charged at the size DynamoDB bills them: a summary or rollup
carrying a batch's maximum tags (50 keys of 128 characters, values of 256) is tens of KB,
and each of its updates also writes its replica in gsi1 (ProjectionType ALL)."""

from __future__ import annotations

import math
from typing import Any

from imagebatch.aws.dynamo_items import batch_pk
from imagebatch.aws.ledger import Ledger
from imagebatch.costs.usage import item_size
from imagebatch.models.records import ImageOutcome

BATCH = "tagged-0123456789abcdef"
MODEL = "stability.sd3-5-large-v1:0"
MAX_TAGS = {f"{i:02d}".ljust(128, "k"): "v" * 256 for i in range(50)}


def _outcome() -> ImageOutcome:
    return ImageOutcome(
        image_id="a-1",
        item_id="a",
        chunk_id="00000",
        status="SUCCEEDED",
        model=MODEL,
        backend="bedrock",
        seed=42,
        prompt_sha256="0" * 64,
        cost_micro_usd=80_000,
        output_key=f"outputs/{BATCH}/a-1.png",
    )


def _items(client: Any, table: str) -> dict[str, dict[str, Any]]:
    page = client.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": batch_pk(BATCH)}},
        ConsistentRead=True,
    )
    return {item["sk"]["S"]: item for item in page["Items"]}


def test_a_batch_with_maximum_tags_is_charged_its_real_write_units(
    dynamodb_client: Any, ledger_table: str
) -> None:
    ledger = Ledger(dynamodb_client, ledger_table)
    assert ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 1, "tags": MAX_TAGS})

    ledger.commit_images(BATCH, [_outcome()], tags=MAX_TAGS)

    items = _items(dynamodb_client, ledger_table)
    summary = items["SUMMARY"]
    rollup = next(item for sk, item in items.items() if sk.startswith("DAY#"))
    kb = [math.ceil(item_size(item) / 1024) for item in (summary, rollup)]
    assert kb[0] >= 19 and kb[1] >= 19  # the tags alone are about 19 KB
    # a transactional write bills 2 units per KB on the table, and the gsi1 replica of a
    # projected item 1 unit per KB
    least = sum(2 * size + size for size in kb)
    charged = int(summary["use_ddb_write_units"]["N"])
    assert charged >= least, (
        f"charged {charged} write units, the summary and rollup alone bill {least}"
    )
