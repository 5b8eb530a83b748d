"""The batch summary as its ledger item, for tests that compare items attribute by attribute.

The ledger returns a BatchRecord; these tests state what the item holds, so they read the
record back through the adapter's own serialisation: a comparison with the item also checks
that the record keeps every attribute it was read with.
"""

from __future__ import annotations

from typing import Any, overload

from imagebatch.aws.batch_items import record_attributes
from imagebatch.models.batch_record import BatchRecord


@overload
def as_item(record: BatchRecord) -> dict[str, Any]: ...
@overload
def as_item(record: None) -> None: ...
@overload
def as_item(record: BatchRecord | None) -> dict[str, Any] | None: ...
def as_item(record: BatchRecord | None) -> dict[str, Any] | None:
    """The summary item's attributes (plain values, keys included), or None for no batch."""
    return record_attributes(record) if record is not None else None
