"""The batch summary (models.batch_record.BatchRecord) to and from its DynamoDB item.

The only place that names the summary's attributes as strings on the read side: the item
keeps its attribute names and values (aliases where a field's name says more than the
attribute's), and the key attributes stay in the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagebatch.aws.dynamo_items import BATCH_LIST_PK, SUMMARY_SK, batch_pk, from_item
from imagebatch.models.batch_record import BatchRecord

# Table and index keys: the adapter's, not the batch's.
_KEYS = ("pk", "sk", "gsi1pk", "gsi1sk")


def record_from_plain(plain: Mapping[str, Any]) -> BatchRecord:
    """A summary item already deserialised (aws.dynamo_items.from_item) as a BatchRecord."""
    return BatchRecord.model_validate({k: v for k, v in plain.items() if k not in _KEYS})


def record_from_item(item: Mapping[str, Any]) -> BatchRecord:
    """A summary item in DynamoDB's wire format as a BatchRecord."""
    return record_from_plain(from_item(item))


def record_fields(record: BatchRecord) -> dict[str, Any]:
    """The attributes the record was given (read or set), under their stored names; keys
    not included. Unset fields stay out, so a record written holds what it was told."""
    return record.model_dump(mode="json", by_alias=True, exclude_unset=True)


def record_attributes(record: BatchRecord) -> dict[str, Any]:
    """The whole summary item, keys included, as plain values (what from_item gives)."""
    return {
        **record_fields(record),
        "pk": batch_pk(record.batch_id),
        "sk": SUMMARY_SK,
        "gsi1pk": BATCH_LIST_PK,
        "gsi1sk": f"{record.created_at}#{record.batch_id}",
    }
