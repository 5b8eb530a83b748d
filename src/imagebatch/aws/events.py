"""EventBridge: the events imagebatch publishes on the stack's own bus.

Source `imagebatch` on BatchEventBus (template.yaml lets the finalize function put only that
source on only that bus, and the bus's policy refuses every other principal); the detail is a
JSON document the pipeline shapes (pipeline/batch_events.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from imagebatch.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

EVENT_SOURCE = "imagebatch"


class EventBus:
    """PutEvents of one event at a time, on one bus, from imagebatch."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self.bus_name = bus_name

    def put(self, detail_type: str, detail_json: str) -> str:
        """Publish one event; returns its id. A refused or failed entry is a StorageError."""
        try:
            response = self._client.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": detail_type,
                        "Detail": detail_json,
                        "EventBusName": self.bus_name,
                    }
                ]
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"PutEvents {detail_type}: {exc}", transient=True) from exc
        entry = response["Entries"][0] if response.get("Entries") else {}
        if response.get("FailedEntryCount") or "EventId" not in entry:
            raise StorageError(
                f"PutEvents {detail_type}: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}",
                transient=entry.get("ErrorCode") == "ThrottlingException",
            )
        return entry["EventId"]
