"""DynamoDB adapter for the endpoint's instance time: samples, requests, attributed windows.

Layout (same table as the ledger):
  pk ENDPOINT#<name>  sk SAMPLE#<time>             DescribeEndpoint's counts, when they changed
  pk ENDPOINT#<name>  sk REQUEST#<done>#<key>      one async request the result path recorded
                                                   (written in its commit's transaction)
  pk ENDPOINT#<name>  sk WINDOW#<start>            a window attributed (costs.overhead): its
                                                   instance-seconds, billed, inference, lines
  pk ENDPOINT#<name>  sk DAY#<day>                 the unattributed idle of the day; in gsi1
                                                   under COSTS, so /costs shows it as a line
  pk BATCH#<id>       sk OVERHEAD#<name>#<start>   the batch's cold start + idle of a window,
                                                   also ADDed to its summary and day rollup
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from imagebatch.aws.batch_items import record_from_item
from imagebatch.aws.dynamo_items import (
    COSTS_PK,
    SUMMARY_SK,
    add_action,
    batch_pk,
    cancelled_by_condition,
    from_item,
    now_iso,
    rollup_sk,
    to_item,
)
from imagebatch.costs.overhead import (
    UNATTRIBUTED,
    EndpointRequest,
    InstanceSample,
    OverheadLine,
    Window,
)
from imagebatch.costs.usage import Meter

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

logger = Logger(child=True)


def endpoint_pk(endpoint: str) -> str:
    return f"ENDPOINT#{endpoint}"


def request_put(table: str, endpoint: str, request: EndpointRequest) -> TransactWriteItemTypeDef:
    """The request's record, for the result path's commit transaction (once-only there by
    its request marker)."""
    item = {
        "pk": endpoint_pk(endpoint),
        "sk": f"REQUEST#{request.completed_at.isoformat()}#{request.request_id}",
        **request.model_dump(mode="json"),
    }
    return {"Put": {"TableName": table, "Item": to_item(item)}}


class EndpointUsageStore:
    def __init__(self, client: DynamoDBClient, table: str, meter: Meter | None = None) -> None:
        self._ddb = client
        self.table = table
        # Reads made for a batch (ingest's look at the endpoint) are charged to it.
        self.meter = meter

    # -- samples ----------------------------------------------------------------------------

    def record_sample(self, endpoint: str, sample: InstanceSample) -> None:
        self._ddb.put_item(
            TableName=self.table,
            Item=to_item(
                {
                    "pk": endpoint_pk(endpoint),
                    "sk": f"SAMPLE#{sample.at.isoformat()}",
                    **sample.model_dump(mode="json"),
                }
            ),
        )

    def _query(self, endpoint: str, low: str, high: str, **extra: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": to_item(
                {":pk": endpoint_pk(endpoint), ":low": low, ":high": high}
            ),
            "ConsistentRead": True,
            **extra,
        }
        while True:
            response = self._ddb.query(**request)
            items.extend(from_item(i) for i in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last or "Limit" in extra:
                return items
            request["ExclusiveStartKey"] = last

    def last_sample(self, endpoint: str) -> InstanceSample | None:
        items = self._query(endpoint, "SAMPLE#", "SAMPLE#~", ScanIndexForward=False, Limit=1)
        if self.meter is not None:
            self.meter.add(ddb_read_units=1)
        return InstanceSample.model_validate(items[0]) if items else None

    def samples_since(self, endpoint: str, since: datetime | None) -> list[InstanceSample]:
        low = f"SAMPLE#{since.isoformat()}" if since else "SAMPLE#"
        return [InstanceSample.model_validate(i) for i in self._query(endpoint, low, "SAMPLE#~")]

    def at_zero(self, endpoint: str) -> bool:
        """Whether no instance is billed, by the last sample (none yet: as deployed, unknown,
        taken as at zero so that backend auto counts a cold start)."""
        last = self.last_sample(endpoint)
        return last is None or last.billed == 0

    # -- requests and windows --------------------------------------------------------------

    def requests_between(
        self, endpoint: str, start: datetime, end: datetime
    ) -> list[EndpointRequest]:
        items = self._query(endpoint, f"REQUEST#{start.isoformat()}", f"REQUEST#{end.isoformat()}~")
        return [
            EndpointRequest.model_validate({k: v for k, v in i.items() if k not in {"pk", "sk"}})
            for i in items
        ]

    def last_window_end(self, endpoint: str) -> datetime | None:
        items = self._query(endpoint, "WINDOW#", "WINDOW#~", ScanIndexForward=False, Limit=1)
        return datetime.fromisoformat(items[0]["end"]) if items else None

    def windows(self, endpoint: str) -> list[dict[str, Any]]:
        return self._query(endpoint, "WINDOW#", "WINDOW#~")

    def commit_window(self, endpoint: str, window: Window) -> Window:
        """Charge each batch its lines (bounded by its cap), then record the window with what
        no batch was charged. Returns the window as charged. Safe to repeat: a batch already
        charged for this window, or a window already recorded, is not charged again."""
        lines = [line for line in window.lines if line.charged_to != UNATTRIBUTED]
        charged: list[OverheadLine] = [ln for ln in window.lines if ln.charged_to == UNATTRIBUTED]
        by_batch: dict[str, list[OverheadLine]] = {}
        for line in lines:
            by_batch.setdefault(line.charged_to, []).append(line)
        for batch_id, batch_lines in sorted(by_batch.items()):
            charged.extend(self._charge_batch(endpoint, window, batch_id, batch_lines))
        final = window.model_copy(update={"lines": tuple(charged)})
        unattributed = sum(ln.micro_usd for ln in charged if ln.charged_to == UNATTRIBUTED)
        day = window.end.date().isoformat()
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": to_item(
                        {
                            "pk": endpoint_pk(endpoint),
                            "sk": f"WINDOW#{window.start.isoformat()}",
                            "start": window.start.isoformat(),
                            "end": window.end.isoformat(),
                            "sessions": len(window.sessions),
                            "instance_seconds": str(window.instance_seconds),
                            "billed_micro_usd": window.billed_micro_usd,
                            "inference_micro_usd": window.inference_micro_usd,
                            "unattributed_micro_usd": unattributed,
                            "lines": json.dumps([ln.model_dump() for ln in charged]),
                            "recorded_at": now_iso(),
                        }
                    ),
                    "ConditionExpression": "attribute_not_exists(sk)",
                }
            }
        ]
        if unattributed:
            actions.append(
                add_action(
                    self.table,
                    endpoint_pk(endpoint),
                    rollup_sk(day),
                    {"spent_micro_usd": unattributed, f"model_spent#{UNATTRIBUTED}": unattributed},
                    {
                        "gsi1pk": COSTS_PK,
                        "gsi1sk": f"{day}#{endpoint_pk(endpoint)}",
                        "day": day,
                        "batch_id": UNATTRIBUTED,
                        "endpoint": endpoint,
                        "backend": "sagemaker",
                    },
                )
            )
        try:
            self._ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if not cancelled_by_condition(exc):
                raise
            logger.info("window already recorded", extra={"window": window.start.isoformat()})
        return final

    def _charge_batch(
        self, endpoint: str, window: Window, batch_id: str, lines: Sequence[OverheadLine]
    ) -> list[OverheadLine]:
        """One transaction: the OVERHEAD record, the summary and the day rollup. A capped
        batch is charged at most its budget left; the rest stays unattributed (shown)."""
        pk = batch_pk(batch_id)
        sk = f"OVERHEAD#{endpoint}#{window.start.isoformat()}"
        existing = self._ddb.get_item(
            TableName=self.table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True
        ).get("Item")
        if existing:
            return [
                OverheadLine.model_validate(ln) for ln in json.loads(from_item(existing)["lines"])
            ]
        summary_item = self._ddb.get_item(
            TableName=self.table, Key=to_item({"pk": pk, "sk": SUMMARY_SK}), ConsistentRead=True
        ).get("Item")
        summary = record_from_item(summary_item) if summary_item else None
        capped = summary is not None and summary.capped
        share = sum(ln.micro_usd for ln in lines)
        room = share
        if summary is None:
            room = 0  # a batch the ledger does not know: nothing to charge it to
        elif capped:
            room = summary.budget_left_micro_usd
        kept = _bounded(lines, max(min(room, share), 0))
        charge = sum(ln.micro_usd for ln in kept)
        over = share - charge
        result = list(kept)
        if over:
            result.append(OverheadLine(charged_to=UNATTRIBUTED, kind="idle", micro_usd=over))
        summary_adds = {"spent_micro_usd": charge, "endpoint_overhead_micro_usd": charge}
        condition = "attribute_exists(pk)"
        values: dict[str, Any] = {}
        if capped:
            summary_adds["budget_left_micro_usd"] = -charge
        day = window.end.date().isoformat()
        model = ((summary.models if summary else None) or ["(none)"])[0]
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": to_item(
                        {
                            "pk": pk,
                            "sk": sk,
                            "endpoint": endpoint,
                            "window_start": window.start.isoformat(),
                            "window_end": window.end.isoformat(),
                            "cold_start_micro_usd": _kind(kept, "cold_start"),
                            "idle_micro_usd": _kind(kept, "idle"),
                            "overhead_micro_usd": charge,
                            "over_cap_micro_usd": over,
                            "lines": json.dumps([ln.model_dump() for ln in result]),
                            "rule": "imagebatch.costs.overhead.attribute_window",
                            "recorded_at": now_iso(),
                        }
                    ),
                    "ConditionExpression": "attribute_not_exists(sk)",
                }
            }
        ]
        if summary and charge:
            update = add_action(self.table, pk, SUMMARY_SK, summary_adds, {}, condition=condition)[
                "Update"
            ]
            if capped:
                update["ConditionExpression"] = f"{condition} AND budget_left_micro_usd >= :room"
                values = {":room": charge}
                update["ExpressionAttributeValues"] = {
                    **update["ExpressionAttributeValues"],
                    **to_item(values),
                }
            actions.append({"Update": update})
            actions.append(
                add_action(
                    self.table,
                    pk,
                    rollup_sk(day),
                    {"spent_micro_usd": charge, f"model_spent#{model}": charge},
                    {
                        "gsi1pk": COSTS_PK,
                        "gsi1sk": f"{day}#{batch_id}",
                        "day": day,
                        "batch_id": batch_id,
                        "backend": summary.backend if summary else None,
                        "tags": (summary.tags if summary else None) or None,
                    },
                )
            )
        try:
            self._ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if not cancelled_by_condition(exc):
                raise
            # Charged meanwhile by another run, or the budget moved: read again and redo.
            return self._charge_batch(endpoint, window, batch_id, lines)
        return result

    def overhead_records(self, batch_id: str) -> list[dict[str, Any]]:
        response = self._ddb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": batch_pk(batch_id), ":prefix": "OVERHEAD#"}),
            ConsistentRead=True,
        )
        return [from_item(i) for i in response.get("Items", [])]


def _kind(lines: Sequence[OverheadLine], kind: str) -> int:
    return sum(ln.micro_usd for ln in lines if ln.kind == kind)


def _bounded(lines: Sequence[OverheadLine], room: int) -> list[OverheadLine]:
    """The lines cut down to `room` micro-dollars, cold start first (it came first)."""
    kept = []
    for line in sorted(lines, key=lambda ln: ln.kind != "cold_start"):
        amount = min(line.micro_usd, room)
        room -= amount
        if amount:
            kept.append(line.model_copy(update={"micro_usd": amount}))
    return kept
