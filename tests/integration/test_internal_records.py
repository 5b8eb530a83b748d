"""Internal state read back is validated (issue 19, "internal state sealed"): a record the
pipeline wrote for itself under chunks/, async-*/ or the ledger can be overwritten by anyone
with s3:PutObject on the bucket until the bucket policy keeps them out, so what is read back
must hold what the pipeline could have written (no negative money or counts, ids of its own
chunk, keys under its own prefixes) or be refused."""

from __future__ import annotations

import json
from typing import Any

from support.ledger_summary import as_item

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.prices import load_aws_prices

BATCH = "forged-0123456789abcdef"
MODEL = "stability.sd3-5-large-v1:0"


def _forged_outcome(**fields: Any) -> dict[str, Any]:
    return {
        "image_id": "a-1",
        "item_id": "a",
        "chunk_id": "00000",
        "status": "SUCCEEDED",
        "model": MODEL,
        "backend": "bedrock",
        "seed": 1,
        "prompt_sha256": "0" * 64,
        "cost_micro_usd": 80_000,
        "output_key": f"outputs/{BATCH}/a-1.png",
        **fields,
    }


def _capped_batch(ledger: Ledger) -> int:
    ledger.create_batch(
        BATCH,
        {
            "status": "RUNNING",
            "images_total": 1,
            "max_cost_micro_usd": 1_000_000,
            "overhead_reserve_micro_usd": 1_000,
        },
    )
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    return summary.budget_left_micro_usd


def test_a_forged_pending_file_with_a_negative_cost_is_refused(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    from imagebatch.pipeline.pending import commit_pending

    # GIVEN a capped batch, and a pending file nobody in the pipeline wrote: one "made" image
    # whose cost is minus a thousand dollars
    ledger = Ledger(dynamodb_client, ledger_table)
    left = _capped_batch(ledger)
    store = BatchStore(s3_client, s3_bucket)
    forged = {
        "outcomes": [_forged_outcome(cost_micro_usd=-1_000_000_000)],
        "capped": True,
        "usage": {"lambda_requests": 1},
    }
    store.put_pending_commit(BATCH, "00000", json.dumps(forged).encode())
    # WHEN the chunk's next attempt commits what it finds pending
    recorded = commit_pending(store, ledger, BATCH, "00000", load_aws_prices().region("us-east-1"))
    # THEN nothing is committed: the budget left and the images stay as they were
    summary = as_item(ledger.get_batch(BATCH)) or {}
    assert summary["budget_left_micro_usd"] == left
    assert summary["images_succeeded"] == 0
    assert recorded == 0
    assert list(ledger.image_records(BATCH)) == []


def test_a_pending_file_foreign_to_its_chunk_is_refused(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    from imagebatch.pipeline.pending import commit_pending

    ledger = Ledger(dynamodb_client, ledger_table)
    left = _capped_batch(ledger)
    store = BatchStore(s3_client, s3_bucket)
    prices = load_aws_prices().region("us-east-1")
    forgeries: list[dict[str, Any]] = [
        # another chunk's image, an image "stored" outside outputs/ or in another batch
        {"outcomes": [_forged_outcome(chunk_id="00007")]},
        {"outcomes": [_forged_outcome(output_key="catalogs/home/latest/SKU1/front.png")]},
        {"outcomes": [_forged_outcome(output_key="outputs/other-batch/a-1.png")]},
        # negative counts or a negative hold: credits in another field
        {"outcomes": [_forged_outcome()], "usage": {"lambda_mb_ms": -(10**12)}},
        {"outcomes": [_forged_outcome()], "reserved_micro_usd": -(10**9)},
    ]
    for forged in forgeries:
        store.put_pending_commit(BATCH, "00000", json.dumps(forged).encode())
        assert commit_pending(store, ledger, BATCH, "00000", prices) == 0, forged
    summary = as_item(ledger.get_batch(BATCH)) or {}
    assert summary["budget_left_micro_usd"] == left
    assert list(ledger.image_records(BATCH)) == []
    # AND the pipeline's own pending file is still committed
    own = {"outcomes": [_forged_outcome()], "capped": True}
    store.put_pending_commit(BATCH, "00000", json.dumps(own).encode())
    assert commit_pending(store, ledger, BATCH, "00000", prices) == 1
