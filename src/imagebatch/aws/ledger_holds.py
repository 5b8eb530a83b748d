"""Budget holds on the ledger: a chunk holds an upper bound of its charge before it spends,
settles in its commit (aws.ledger), and a hold no commit settled is written off as spent.

Invariant on the batch summary: spent + reserved + budget_left + overhead_reserve = cap.
What each step moves is costs.budget's; this adapter writes it as DynamoDB conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from imagebatch.aws.batch_items import record_from_plain
from imagebatch.aws.dynamo_items import (
    SUMMARY_SK,
    batch_pk,
    budget_action,
    cancelled_by_condition,
    from_item,
    now_iso,
    reported_write_units,
    reservation_sk,
    rollup_action,
    to_item,
)
from imagebatch.costs import budget
from imagebatch.costs.settlement import model_charge_adds
from imagebatch.costs.usage import (
    SUMMARY_SIZE_BOUND,
    Meter,
    indexed_write_units,
    item_size,
    read_units,
    rollup_write_units,
    summary_write_units,
    tags_bytes,
    write_units,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(child=True)

AdapterT = TypeVar("AdapterT")
_BATCH_GET_LIMIT = 100
# What one update can add to a summary it read before (the counters a first commit creates,
# a status, a sheet position): its write is billed on the larger of before and after.
SUMMARY_GROWTH_BOUND = 1024


class LedgerTable:
    """The ledger table with its request meter: every read and write is charged to a batch."""

    def __init__(self, client: DynamoDBClient, table: str, meter: Meter | None = None) -> None:
        self._ddb = client
        self.table = table
        # Reads and writes this ledger makes are counted: the batch is charged for them.
        self.meter = meter or Meter()
        # Each batch summary's size as last read or written (DynamoDB bills a write on it):
        # a summary with large tags costs tens of units an update, not the bound's few.
        self._summary_bytes: dict[str, int] = {}

    @property
    def client(self) -> DynamoDBClient:
        """The table's client, for a test that opens a fresh ledger on the same table (an
        adapter beside this one: `beside`)."""
        return self._ddb

    def beside(self, adapter: Callable[[DynamoDBClient, str, Meter], AdapterT]) -> AdapterT:
        """Another adapter of the same table (endpoint throughput, endpoint usage) that
        counts its requests on this ledger's meter, so the commit charges them to the batch."""
        return adapter(self._ddb, self.table, self.meter)

    def summary_write_units(self, batch_id: str, *, transactional: bool) -> int:
        """What an update of the batch's summary is billed before it is made: its size as
        last seen (plus what one update can add), else the bound; its gsi1 replica
        included."""
        seen = self._summary_bytes.get(batch_id)
        size = SUMMARY_SIZE_BOUND if seen is None else seen + SUMMARY_GROWTH_BOUND
        return indexed_write_units(size, transactional=transactional)

    def saw_summary(self, batch_id: str, item: Mapping[str, Any]) -> int:
        """Note a summary as DynamoDB returned it (wire format); returns its size."""
        size = item_size(item)
        self._summary_bytes[batch_id] = size
        return size

    def metered_summary_update(self, batch_id: str, **update: Any) -> dict[str, Any]:
        """One UpdateItem of the summary, metered from what it wrote: the larger of the
        units DynamoDB reports (ReturnConsumedCapacity INDEXES; moto reports a flat figure)
        and those of the item's size after the update, read back with ReturnValues ALL_NEW,
        in the table and its gsi1 replica. Raises as update_item does (then the units the
        summary's size bounds are metered: a refused conditional write is billed too)."""
        try:
            response = self._ddb.update_item(
                **update, ReturnValues="ALL_NEW", ReturnConsumedCapacity="INDEXES"
            )
        except ClientError:
            self.meter.add(ddb_write_units=self.summary_write_units(batch_id, transactional=False))
            raise
        size = self.saw_summary(batch_id, response.get("Attributes", {}))
        units = max(
            indexed_write_units(size, transactional=False),
            reported_write_units(response.get("ConsumedCapacity")),
        )
        self.meter.add(ddb_write_units=units)
        return dict(response)

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(
            TableName=self.table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True
        )
        item = response.get("Item")
        self.meter.add(ddb_read_units=read_units(item_size(item) if item else 0))
        return from_item(item) if item else None

    def get_many(
        self, pk: str, sks: Sequence[str], *, projection: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The items of `pk` under `sks` that exist (BatchGetItem, 100 keys a request, its
        unprocessed keys asked again), in no order; each key read counts one read unit."""
        for start in range(0, len(sks), _BATCH_GET_LIMIT):
            keys = [to_item({"pk": pk, "sk": sk}) for sk in sks[start : start + _BATCH_GET_LIMIT]]
            wanted: dict[str, Any] = {"Keys": keys, "ConsistentRead": True}
            if projection is not None:
                wanted["ProjectionExpression"] = projection
            request: dict[str, Any] = {self.table: wanted}
            while request:
                self.meter.add(ddb_read_units=len(request[self.table]["Keys"]))
                response = self._ddb.batch_get_item(RequestItems=request)
                yield from (from_item(i) for i in response["Responses"].get(self.table, []))
                request = dict(response.get("UnprocessedKeys") or {})

    def query_batch(
        self, batch_id: str, sk_prefix: str, *, after_sk: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The batch's items whose sort key starts with `sk_prefix`, in key order; with
        `after_sk`, only those after it (where an earlier invocation stopped)."""
        paginator = self._ddb.get_paginator("query")
        if after_sk is None:
            condition = "pk = :pk AND begins_with(sk, :prefix)"
            values = {":pk": batch_pk(batch_id), ":prefix": sk_prefix}
        else:
            # Every key with the prefix sorts below the prefix with its last character
            # raised by one ("IMAGE#..." < "IMAGE$"); BETWEEN includes after_sk itself.
            condition = "pk = :pk AND sk BETWEEN :after AND :end"
            end = sk_prefix[:-1] + chr(ord(sk_prefix[-1]) + 1)
            values = {":pk": batch_pk(batch_id), ":after": after_sk, ":end": end}
        pages = paginator.paginate(
            TableName=self.table,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=to_item(values),
            ConsistentRead=True,
        )
        for page in pages:
            items = page.get("Items", [])
            self.meter.add(ddb_read_units=read_units(sum(item_size(i) for i in items)))
            for item in items:
                record = from_item(item)
                if record["sk"] != after_sk:
                    yield record

    def partition(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every item of the batch: summary, images, chunk markers, holds, day rollups."""
        paginator = self._ddb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=to_item({":pk": batch_pk(batch_id)}),
            ConsistentRead=True,
        ):
            yield from (from_item(item) for item in page.get("Items", []))


def hold_write_units(batch_id: str, hold_id: str) -> int:
    """What `reserve` writes: the hold item (its amount at its widest) and the summary."""
    hold = to_item(
        {"pk": batch_pk(batch_id), "sk": reservation_sk(hold_id), "amount_micro_usd": 10**15}
    )
    return write_units(item_size(hold), transactional=True) + summary_write_units()


class BudgetHolds(LedgerTable):
    def reserve(
        self, batch_id: str, chunk_id: str, amount: int, *, retry: bool = True
    ) -> int | None:
        """Hold `amount` of the batch's budget for a chunk before it spends.

        Returns the amount held, or None when the budget cannot cover it: the chunk must
        not run.
        """
        pk = batch_pk(batch_id)
        hold = to_item({"pk": pk, "sk": reservation_sk(chunk_id), "amount_micro_usd": amount})
        self.meter.add(
            ddb_write_units=write_units(item_size(hold), transactional=True)
            + self.summary_write_units(batch_id, transactional=True)
        )
        try:
            self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": hold,
                            "ConditionExpression": "attribute_not_exists(sk)",
                        }
                    },
                    budget_action(self.table, pk, budget.hold(amount)),
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            if reasons and reasons[0] == "ConditionalCheckFailed" and retry:
                # An earlier attempt of this chunk held budget and died before settling:
                # what it spent is unknown but at most its hold, so the hold is written off
                # as spent and this attempt holds anew.
                self._write_off_hold(batch_id, reservation_sk(chunk_id))
                return self.reserve(batch_id, chunk_id, amount, retry=False)
            if "ConditionalCheckFailed" in reasons or "ConditionalCheckFailed" in str(exc):
                return None
            raise
        return amount

    def release_overhead_reserve(self, batch_id: str, amount: int) -> bool:
        """Move what is left of the overhead reserve (`amount`, as read) into budget_left: a
        settled batch's last spender (the contact sheet) may use it. False when it changed
        meanwhile."""
        move = budget.release_overhead_reserve(amount)
        if move is None:
            return True
        try:
            self.metered_summary_update(
                batch_id, **budget_action(self.table, batch_pk(batch_id), move)["Update"]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_unserved_wake(self, batch_id: str, held: int) -> bool:
        """Give the wake (`held`, as read) back to budget_left when the endpoint served no
        request of the batch: no window will charge it. Conditional on both as read, so a
        window's charge or a late request's commit meanwhile keeps it for the window. False
        when refused."""
        move = budget.release_wake(held)
        if move is None:
            return True
        action = budget_action(
            self.table,
            batch_pk(batch_id),
            move,
            condition="(attribute_not_exists(endpoint_requests) OR endpoint_requests = :none)",
            condition_values={":none": 0},
        )
        try:
            self.metered_summary_update(batch_id, **action["Update"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def save_sheet_position(self, batch_id: str, position: Mapping[str, Any]) -> None:
        """Where this execution's contact sheet goes on (the summary's contact_sheet_position),
        for the invocation Step Functions retries it with."""
        self.metered_summary_update(
            batch_id,
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            UpdateExpression="SET contact_sheet_position = :p",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=to_item({":p": dict(position)}),
        )

    def hold_amount(self, batch_id: str, hold_id: str) -> int | None:
        """What a hold still holds; None when it was settled or written off."""
        hold = self._get(batch_pk(batch_id), reservation_sk(hold_id))
        return int(hold["amount_micro_usd"]) if hold else None

    def write_off_holds(self, batch_id: str, *, prefix: str = "") -> int:
        """Holds no commit settled belong to attempts that died after they may have spent;
        each is charged in full as `unsettled_micro_usd` (an upper bound of what it spent).
        With `prefix`, only the holds whose id starts with it."""
        written_off = 0
        for hold in list(self.query_batch(batch_id, reservation_sk(prefix))):
            written_off += self._write_off_hold(batch_id, hold["sk"])
        return written_off

    def _write_off_hold(self, batch_id: str, sk: str) -> int:
        pk = batch_pk(batch_id)
        hold = self._get(pk, sk)
        if hold is None:
            return 0
        amount = int(hold["amount_micro_usd"])
        self.meter.add(
            ddb_write_units=write_units(0, transactional=True)
            + self.summary_write_units(batch_id, transactional=True)
        )
        # The charge goes to the day's rollup in the same transaction: a write-off after
        # finalize rolled the remainder up (a contact sheet's dead attempt) is otherwise
        # charged to the batch and missing from `costs`.
        summary_item = self._get(pk, SUMMARY_SK)
        summary = record_from_plain(summary_item) if summary_item else None
        self.meter.add(
            ddb_write_units=rollup_write_units(
                tags_bytes(summary.tags) if summary else 0, transactional=True
            )
        )
        model = ((summary.models if summary else None) or ["(none)"])[0]
        rollup = rollup_action(
            self.table,
            now_iso()[:10],
            model_charge_adds(model, amount),
            batch_id=batch_id,
            backend=summary.backend if summary else None,
            tags=summary.tags if summary else None,
        )
        try:
            self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": to_item({"pk": pk, "sk": sk}),
                            "ConditionExpression": "amount_micro_usd = :a",
                            "ExpressionAttributeValues": to_item({":a": amount}),
                        }
                    },
                    budget_action(
                        self.table,
                        pk,
                        budget.write_off(amount),
                        # how much of spent is an upper bound, not a measured charge
                        also={"unsettled_micro_usd": amount},
                        condition="attribute_exists(pk)",
                    ),
                    rollup,
                ]
            )
        except ClientError as exc:
            if not cancelled_by_condition(exc):
                raise
            return 0  # settled or written off by someone else meanwhile
        logger.warning("budget hold written off", extra={"hold": sk, "micro_usd": amount})
        return amount
