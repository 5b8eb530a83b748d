"""DynamoDB adapter for endpoint usage: scale events, and the overhead charged to batches.

Layout (same table as the ledger):
  pk ENDPOINT#<name>  sk SCALE#<time>#<kind>        a scale-out (with ready time) or scale-in
  pk BATCH#<id>       sk OVERHEAD#<name>#<session>  cold-start/idle micro-dollars charged to the
                                                    batch by scaling.attribute_overhead
Overhead is kept beside the image costs, not added to them: an image's cost stays its own
inference time, and a batch's full self-hosted cost is images + overhead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from imagebatch.aws.dynamo_items import batch_pk, from_item, now_iso, to_item
from imagebatch.costs.overhead import ScaleEvent
from imagebatch.costs.usage import Meter

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def endpoint_pk(endpoint: str) -> str:
    return f"ENDPOINT#{endpoint}"


class EndpointUsageStore:
    def __init__(self, client: DynamoDBClient, table: str, meter: Meter | None = None) -> None:
        self._ddb = client
        self.table = table
        # Reads made for a batch (ingest's look at the endpoint) are charged to it.
        self.meter = meter

    def record_scale_event(self, endpoint: str, event: ScaleEvent) -> None:
        self._ddb.put_item(
            TableName=self.table,
            Item=to_item(
                {
                    "pk": endpoint_pk(endpoint),
                    "sk": f"SCALE#{event.at.isoformat()}#{event.kind}",
                    **event.model_dump(mode="json", exclude_none=True),
                }
            ),
        )

    def scale_events(self, endpoint: str) -> list[ScaleEvent]:
        response = self._ddb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": endpoint_pk(endpoint), ":prefix": "SCALE#"}),
            ConsistentRead=True,
        )
        return [ScaleEvent.model_validate(from_item(item)) for item in response.get("Items", [])]

    def at_zero(self, endpoint: str) -> bool:
        """Whether the endpoint has no instance up, by the last scale event on record (none
        recorded: at zero, as it is deployed with no instance)."""
        response = self._ddb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": endpoint_pk(endpoint), ":prefix": "SCALE#"}),
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items", [])
        if self.meter is not None:
            self.meter.add(ddb_read_units=1)
        if not items:
            return True
        last = ScaleEvent.model_validate(from_item(items[0]))
        return last.instances_after == 0

    def record_overhead(
        self, endpoint: str, session_start: str, charges: Mapping[str, int], rule: str
    ) -> None:
        """One record per batch and session; rewriting a session's charge replaces it."""
        for batch_id, micro_usd in charges.items():
            item: dict[str, Any] = {
                "pk": batch_pk(batch_id),
                "sk": f"OVERHEAD#{endpoint}#{session_start}",
                "endpoint": endpoint,
                "session_start": session_start,
                "overhead_micro_usd": micro_usd,
                "rule": rule,
                "recorded_at": now_iso(),
            }
            self._ddb.put_item(TableName=self.table, Item=to_item(item))
