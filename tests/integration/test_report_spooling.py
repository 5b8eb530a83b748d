"""Reports of any length go to S3 through a spool file, not a string in memory."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from imagebatch.aws import s3_store
from imagebatch.aws.s3_store import BatchStore


def test_a_long_jsonl_report_is_spooled_to_disk_and_put_once(
    s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a small spool threshold and a spool class that remembers its instances
    spools: list[Any] = []

    class Recording(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if kwargs.get("max_size") == 4096:  # ours, not moto's own S3 objects
                spools.append(self)

    monkeypatch.setattr(s3_store, "SPOOL_BYTES", 4096)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", Recording)
    store = BatchStore(s3_client, s3_bucket)

    def lines() -> Iterator[str]:
        for i in range(5000):
            yield json.dumps({"image_id": f"i-{i:05d}", "reason": "x" * 40})

    # WHEN 5,000 lines (about 300 KB) are written as a report
    key = store.put_jsonl_report("b", "failed.jsonl", lines())

    # THEN they went through a file on disk, in one PUT, and arrived whole and in order
    assert len(spools) == 1 and spools[0]._rolled
    body = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    rows = body.decode().splitlines()
    assert len(rows) == 5000
    assert json.loads(rows[0])["image_id"] == "i-00000"
    assert json.loads(rows[-1])["image_id"] == "i-04999"
    usage = store.meter.take()
    assert usage.s3_put_requests == 1
    assert usage.s3_bytes_written == len(body)
