"""DynamoDB adapter for the endpoint's instance time: samples, requests, attributed windows.

Layout (same table as the ledger):
  pk ENDPOINT#<name>  sk SAMPLE#<time>             DescribeEndpoint's counts, when they changed
  pk ENDPOINT#<name>  sk REQUEST#<done>#<key>      one async request the result path recorded
                                                   (written in its commit's transaction)
  pk ENDPOINT#<name>  sk WINDOW#<start>            a window attributed (costs.overhead): its
                                                   instance-seconds, billed, inference, lines
  pk ENDPOINT#<name>  sk DAY#<day>                 the unattributed idle of the day; in gsi1
                                                   under COSTS, so /costs shows it as a line
  pk ENDPOINT#<name>  sk DAY#<day>#ACTIVE#<batch>  its share shown with a batch active in its
                                                   windows (tags included; not charged)
  pk BATCH#<id>       sk OVERHEAD#<name>#<start>   the batch's cold start + idle of a window,
                                                   also ADDed to its summary and day rollup
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from imagebatch.aws.batch_items import record_from_plain
from imagebatch.aws.dynamo_items import (
    COSTS_PK,
    SUMMARY_SK,
    add_action,
    batch_pk,
    budget_action,
    cancelled_by_condition,
    endpoint_pk,
    from_item,
    now_iso,
    rollup_action,
    rollup_sk,
    to_item,
)
from imagebatch.costs import budget
from imagebatch.costs.grouping import UNATTRIBUTED_SHARE
from imagebatch.costs.overhead import (
    UNATTRIBUTED,
    EndpointRequest,
    InstanceSample,
    OverheadLine,
    Window,
    unattributed_shares,
)
from imagebatch.costs.settlement import model_charge_adds
from imagebatch.costs.usage import Meter
from imagebatch.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

logger = Logger(child=True)

# Each refused attempt follows a write that landed between its reads and its transaction:
# another observer run charging the same window (the next attempt finds its record) or a
# chunk of the batch holding or settling. Five outlast a busy batch's commits; past that the
# window is left unrecorded and the observer's next run (every minute) charges it, which is
# safe to repeat.
CHARGE_ATTEMPTS = 5


def request_put(table: str, endpoint: str, request: EndpointRequest) -> TransactWriteItemTypeDef:
    """The request's record, for the result path's commit transaction (once-only there by
    its request marker)."""
    item = {
        "pk": endpoint_pk(endpoint),
        "sk": f"REQUEST#{request.completed_at.isoformat()}#{request.request_id}",
        **request.model_dump(mode="json"),
    }
    return {"Put": {"TableName": table, "Item": to_item(item)}}


# Batches a window's record names with their tags, at most (the rest are shown together):
# its transaction also holds the window, the unattributed rollup and one share each, within
# DynamoDB's 100 actions.
MAX_ACTIVE = 90
OTHER_BATCHES = "(other batches)"


class ActiveBatch(BaseModel):
    """A batch active in (or nearest before) a window, as its record shows it: its inference
    seconds there, its share of what stayed unattributed (shown, not charged) and what
    /costs groups by."""

    batch_id: str
    inference_seconds: Decimal = Field(ge=0)
    unattributed_micro_usd: int = Field(ge=0)
    tags: dict[str, str] = Field(default_factory=dict)
    backend: str | None = None
    model: str | None = None


def _window_put(
    table: str, endpoint: str, window: Window, unattributed: int, active: Sequence[ActiveBatch]
) -> TransactWriteItemTypeDef:
    """The window's record, as charged: once-only, so its unattributed rollup and shares are
    added once."""
    item = {
        "pk": endpoint_pk(endpoint),
        "sk": f"WINDOW#{window.start.isoformat()}",
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "sessions": len(window.sessions),
        "instance_seconds": str(window.instance_seconds),
        "billed_micro_usd": window.billed_micro_usd,
        "inference_micro_usd": window.inference_micro_usd,
        "unattributed_micro_usd": unattributed,
        "lines": json.dumps([ln.model_dump() for ln in window.lines]),
        "active": json.dumps([a.model_dump(mode="json") for a in active]),
        "recorded_at": now_iso(),
    }
    return {
        "Put": {
            "TableName": table,
            "Item": to_item(item),
            "ConditionExpression": "attribute_not_exists(sk)",
        }
    }


def _share_action(
    table: str, day: str, endpoint: str, active: ActiveBatch
) -> TransactWriteItemTypeDef:
    """The day's share of the endpoint's unattributed idle shown with one active batch: in
    gsi1 under COSTS beside the unattributed rollup (its batch_id the unattributed label,
    so nothing sums it as spent), carrying the batch's tags, backend and model for /costs."""
    owner = endpoint_pk(endpoint)
    return add_action(
        table,
        owner,
        f"{rollup_sk(day)}#ACTIVE#{active.batch_id}",
        {UNATTRIBUTED_SHARE: active.unattributed_micro_usd},
        {
            "gsi1pk": COSTS_PK,
            "gsi1sk": f"{day}#{owner}#ACTIVE#{active.batch_id}",
            "day": day,
            "batch_id": UNATTRIBUTED,
            "active_batch_id": active.batch_id,
            "endpoint": endpoint,
            "backend": active.backend,
            "model": active.model,
            "tags": active.tags or None,
        },
    )


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
        # a served batch with no share still settles the wake it held (a zero charge)
        by_batch: dict[str, list[OverheadLine]] = {batch: [] for batch in window.served}
        for line in lines:
            by_batch.setdefault(line.charged_to, []).append(line)
        for batch_id, batch_lines in sorted(by_batch.items()):
            charged.extend(self._charge_batch(endpoint, window, batch_id, batch_lines))
        final = window.model_copy(update={"lines": tuple(charged)})
        unattributed = sum(ln.micro_usd for ln in charged if ln.charged_to == UNATTRIBUTED)
        day = window.end.date().isoformat()
        active = self._active_batches(endpoint, window, unattributed)
        actions = [_window_put(self.table, endpoint, final, unattributed, active)]
        if unattributed:
            actions.append(
                rollup_action(
                    self.table,
                    day,
                    model_charge_adds(UNATTRIBUTED, unattributed),
                    batch_id=UNATTRIBUTED,
                    backend="sagemaker",
                    endpoint=endpoint,
                )
            )
        actions.extend(
            _share_action(self.table, day, endpoint, a) for a in active if a.unattributed_micro_usd
        )
        try:
            self._ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if not cancelled_by_condition(exc):
                raise
            logger.info("window already recorded", extra={"window": window.start.isoformat()})
        return final

    def _active_batches(
        self, endpoint: str, window: Window, unattributed: int
    ) -> list[ActiveBatch]:
        """The batches active in the window (those it served), else those active nearest
        before it (the last window recorded before it, which carries its own), each with its
        tags and its share of what stays unattributed (costs.overhead.unattributed_shares),
        so the window's record and /costs show that idle with the teams that ran around it."""
        seconds = dict(window.served) or self._active_before(endpoint, window.start)
        if len(seconds) > MAX_ACTIVE:
            # one transaction holds the window's writes: the most active batches are named,
            # the rest shown together under OTHER_BATCHES
            ranked = sorted(seconds, key=lambda k: (-seconds[k], k))
            rest = sum((seconds[k] for k in ranked[MAX_ACTIVE:]), Decimal(0))
            seconds = {k: seconds[k] for k in ranked[:MAX_ACTIVE]} | {OTHER_BATCHES: rest}
        shares = unattributed_shares(unattributed, seconds)
        active = []
        for batch_id, batch_seconds in sorted(seconds.items()):
            item = self._get(batch_pk(batch_id), SUMMARY_SK) if batch_id != OTHER_BATCHES else None
            summary = record_from_plain(item) if item else None
            active.append(
                ActiveBatch(
                    batch_id=batch_id,
                    inference_seconds=batch_seconds,
                    unattributed_micro_usd=shares.get(batch_id, 0),
                    tags=(summary.tags or {}) if summary else {},
                    backend=summary.backend if summary else None,
                    model=summary.models[0] if summary and summary.models else None,
                )
            )
        return active

    def _active_before(self, endpoint: str, start: datetime) -> dict[str, Decimal]:
        """The batches active in the last window recorded before `start`, by seconds."""
        items = self._query(
            endpoint, "WINDOW#", f"WINDOW#{start.isoformat()}", ScanIndexForward=False, Limit=2
        )
        for item in items:
            if item["start"] != start.isoformat():
                active = json.loads(item.get("active") or "[]")
                return {a["batch_id"]: Decimal(a["inference_seconds"]) for a in active}
        return {}

    def _charge_batch(
        self, endpoint: str, window: Window, batch_id: str, lines: Sequence[OverheadLine]
    ) -> list[OverheadLine]:
        """One transaction: the OVERHEAD record, the summary and the day rollup. A capped
        batch is charged at most its budget left (costs.budget.bound_overhead); the rest
        stays unattributed (shown).

        A transaction refused by a condition means another writer came between the reads
        and the write: another observer run charged this window (the next read finds its
        record) or a chunk moved the budget (the next read sees the new budget_left), so
        the charge is read and worked out again, at most CHARGE_ATTEMPTS times."""
        for _ in range(CHARGE_ATTEMPTS):
            charged = self._try_charge_batch(endpoint, window, batch_id, lines)
            if charged is not None:
                return charged
        raise StorageError(
            f"endpoint overhead of {batch_id}: the summary kept changing under "
            f"{CHARGE_ATTEMPTS} attempts; the window is charged on the observer's next run",
            transient=True,
        )

    def _try_charge_batch(
        self, endpoint: str, window: Window, batch_id: str, lines: Sequence[OverheadLine]
    ) -> list[OverheadLine] | None:
        """The batch's lines as charged, or None when another writer came first."""
        pk = batch_pk(batch_id)
        sk = f"OVERHEAD#{endpoint}#{window.start.isoformat()}"
        existing = self._get(pk, sk)
        if existing:
            return [OverheadLine.model_validate(ln) for ln in json.loads(existing["lines"])]
        summary_item = self._get(pk, SUMMARY_SK)
        summary = record_from_plain(summary_item) if summary_item else None
        bound = budget.bound_overhead(
            lines,
            budget_left=summary.budget_left_micro_usd if summary and summary.capped else None,
            known=summary is not None,
            wake_held=summary.wake_held_micro_usd if summary else 0,
        )
        charge = bound.micro_usd
        day = window.end.date().isoformat()
        model = ((summary.models if summary else None) or ["(none)"])[0]
        actions = [self._overhead_put(pk, sk, endpoint, window, bound)]
        if summary is not None and (charge or bound.move.wake_held):
            actions.append(
                budget_action(
                    self.table,
                    pk,
                    bound.move,
                    also={"endpoint_overhead_micro_usd": charge},
                    condition="attribute_exists(pk)",
                )
            )
        if summary is not None and charge:
            actions.append(
                rollup_action(
                    self.table,
                    day,
                    model_charge_adds(model, charge),
                    batch_id=batch_id,
                    backend=summary.backend,
                    tags=summary.tags,
                )
            )
        try:
            self._ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if not cancelled_by_condition(exc):
                raise
            return None
        return bound.lines

    def _overhead_put(
        self, pk: str, sk: str, endpoint: str, window: Window, bound: budget.OverheadCharge
    ) -> TransactWriteItemTypeDef:
        """The batch's OVERHEAD record of the window: once-only, so a window is never
        charged to a batch twice."""
        record = {
            "pk": pk,
            "sk": sk,
            "endpoint": endpoint,
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "cold_start_micro_usd": bound.of_kind("cold_start"),
            "idle_micro_usd": bound.of_kind("idle"),
            "overhead_micro_usd": bound.micro_usd,
            "over_cap_micro_usd": bound.over_cap_micro_usd,
            "lines": json.dumps([ln.model_dump() for ln in bound.lines]),
            "rule": "imagebatch.costs.overhead.attribute_window",
            "recorded_at": now_iso(),
        }
        return {
            "Put": {
                "TableName": self.table,
                "Item": to_item(record),
                "ConditionExpression": "attribute_not_exists(sk)",
            }
        }

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        item = self._ddb.get_item(
            TableName=self.table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def overhead_records(self, batch_id: str) -> list[dict[str, Any]]:
        response = self._ddb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": batch_pk(batch_id), ":prefix": "OVERHEAD#"}),
            ConsistentRead=True,
        )
        return [from_item(i) for i in response.get("Items", [])]
