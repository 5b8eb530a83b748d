"""The batch summary's item and its record (aws.batch_items, which imports the AWS SDK's
DynamoDB types): a summary read as a BatchRecord and written back loses nothing."""

from __future__ import annotations

from imagebatch.aws.batch_items import record_attributes, record_fields, record_from_plain


def test_a_summary_item_survives_the_record_unchanged() -> None:
    # GIVEN a summary item as the ledger stores it (deserialised), with an attribute
    # this version does not know
    item = {
        "pk": "BATCH#b-1",
        "sk": "SUMMARY",
        "gsi1pk": "BATCHES",
        "gsi1sk": "2026-11-20T10:00:00.000+00:00#b-1",
        "batch_id": "b-1",
        "created_at": "2026-11-20T10:00:00.000+00:00",
        "status": "RUNNING",
        "estimate_micro_usd": 240_900,
        "estimate_inference_micro_usd": 240_000,
        "images_total": 3,
        "use_ddb_write_units": 4,
        "contact_sheet_position": {"execution": "arn:x", "page": 2, "after_image_id": None},
        "added_by_a_newer_writer": "kept",
    }
    # WHEN it is read as a record and written back
    record = record_from_plain(item)
    # THEN the names say what they hold, and nothing was lost or added
    assert record.estimate_total_micro_usd == 240_900
    assert record.estimate_inference_micro_usd == 240_000
    assert record.contact_sheet_position is not None and record.contact_sheet_position.page == 2
    assert record_attributes(record) == item
    assert "pk" not in record_fields(record)
