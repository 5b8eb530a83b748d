"""DynamoDB adapter for the cost ledger: one table, money in integer micro-dollars.

Layout (pk = BATCH#<id>):
  sk SUMMARY          the batch summary, read in one GetItem; counters ADDed once per chunk
  sk IMAGE#<image-id> one record per image: outcome, cost, price source
  sk CHUNK#<chunk-id> written by the state machine when a chunk fails for good
  sk RESERVATION#<chunk-id>  budget a running chunk holds; deleted when the chunk settles
  sk DAY#<yyyy-mm-dd> cost rollup (totals, per-model totals), ADDed at each commit; in gsi1
                     under COSTS so cost over a time range is one Query, never a Scan

Budget (when the batch has max_cost_micro_usd): the summary keeps spent_micro_usd (what was
charged), reserved_micro_usd (held by running chunks) and budget_left_micro_usd, with
spent + reserved + budget_left + overhead_reserve = cap at every commit. A chunk reserves
before it spends (conditional on budget_left) and settles in its commit transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from imagebatch.pricing import RegionPrices
from imagebatch.records import BatchStatus, ImageOutcome
from imagebatch.usage import (
    ROLLUP_SIZE_BOUND,
    SUMMARY_SIZE_BOUND,
    Meter,
    Usage,
    ceil_micro,
    item_size,
    price_usage,
    read_units,
    write_units,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

SUMMARY_SK = "SUMMARY"
BATCH_LIST_PK = "BATCHES"
COSTS_PK = "COSTS"
# DynamoDB caps a transaction at 100 actions; three are the summary update, the day's cost
# rollup and the deletion of the chunk's budget hold.
MAX_IMAGES_PER_COMMIT = 97
_BATCH_GET_LIMIT = 100

logger = Logger(child=True)
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def batch_pk(batch_id: str) -> str:
    return f"BATCH#{batch_id}"


def image_sk(image_id: str) -> str:
    return f"IMAGE#{image_id}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: _plain_number(v) for k, v in plain.items()}


def _plain_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain_number(v) for k, v in value.items()}
    return value


def _cancelled_by_condition(exc: ClientError) -> bool:
    if exc.response["Error"]["Code"] != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    if not reasons:
        # Some endpoints put the reasons only in the message.
        return "ConditionalCheckFailed" in exc.response["Error"].get("Message", "")
    return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)


class ImagesAlreadyRecordedError(Exception):
    """A commit raced another invocation of the same chunk; nothing was written."""


class Settlement(BaseModel):
    """What a commit charges: the chunk's reservation (if any) and the counted operations."""

    model_config = ConfigDict(frozen=True)
    chunk_id: str
    reserved_micro_usd: int = 0
    has_reservation: bool = False
    # Operations the invocation counted; the commit adds its own writes and charges the
    # orchestration + storage of all of them (rounded up) at these prices.
    usage: Usage = Usage()
    prices: RegionPrices | None = None
    # A chunk refused for budget pays its bookkeeping from the batch's overhead reserve.
    from_overhead_reserve: bool = False


def reservation_sk(chunk_id: str) -> str:
    return f"RESERVATION#{chunk_id}"


def rollup_sk(day: str) -> str:
    return f"DAY#{day}"


def _summary_adds(
    outcomes: Sequence[ImageOutcome],
    settlement: Settlement,
    usage: Usage,
    overhead: int,
    *,
    capped: bool,
) -> dict[str, int]:
    inference = sum(o.cost_micro_usd for o in outcomes)
    charge = inference + overhead
    if settlement.has_reservation and charge > settlement.reserved_micro_usd:
        logger.error(
            "charge exceeds reservation",
            extra={"charge": charge, "reserved": settlement.reserved_micro_usd},
        )
    succeeded = sum(1 for o in outcomes if o.status == "SUCCEEDED")
    adds = {
        "images_succeeded": succeeded,
        "images_failed": len(outcomes) - succeeded,
        "cost_micro_usd": inference,
        "spent_micro_usd": charge,
        "chunk_commits": 1,
        **usage.ledger_fields(),
    }
    if settlement.has_reservation:
        adds["reserved_micro_usd"] = -settlement.reserved_micro_usd
        adds["budget_left_micro_usd"] = settlement.reserved_micro_usd - charge
    elif capped and settlement.from_overhead_reserve:
        adds["overhead_reserve_micro_usd"] = -charge
    elif capped:
        adds["budget_left_micro_usd"] = -charge
    return adds


class Ledger:
    def __init__(self, client: DynamoDBClient, table: str, meter: Meter | None = None) -> None:
        self._ddb = client
        self.table = table
        # Reads and writes this ledger makes are counted: the batch is charged for them.
        self.meter = meter or Meter()

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        self.meter.add(ddb_read_units=read_units(item_size(item) if item else 0))
        return from_item(item) if item else None

    def create_batch(self, batch_id: str, attributes: Mapping[str, Any]) -> bool:
        """Write the batch summary once; False when this batch already exists."""
        created_at = attributes.get("created_at") or now_iso()
        record = {
            "images_succeeded": 0,
            "images_failed": 0,
            "cost_micro_usd": 0,
            "spent_micro_usd": 0,
            "reserved_micro_usd": 0,
            "chunk_commits": 0,
            **attributes,
            "pk": batch_pk(batch_id),
            "sk": SUMMARY_SK,
            "batch_id": batch_id,
            "created_at": created_at,
            "gsi1pk": BATCH_LIST_PK,
            "gsi1sk": f"{created_at}#{batch_id}",
        }
        cap = attributes.get("max_cost_micro_usd")
        if cap is not None:
            reserve = int(attributes.get("overhead_reserve_micro_usd") or 0)
            record["overhead_reserve_micro_usd"] = reserve
            record["budget_left_micro_usd"] = int(cap) - reserve - int(record["spent_micro_usd"])
        item = to_item(record)
        self.meter.add(ddb_write_units=write_units(item_size(item)))
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def recorded_image_ids(self, batch_id: str, image_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(image_ids), _BATCH_GET_LIMIT):
            keys = [
                to_item({"pk": batch_pk(batch_id), "sk": image_sk(image_id)})
                for image_id in image_ids[start : start + _BATCH_GET_LIMIT]
            ]
            request: dict[str, Any] = {
                self.table: {"Keys": keys, "ProjectionExpression": "sk", "ConsistentRead": True}
            }
            while request:
                self.meter.add(ddb_read_units=len(request[self.table]["Keys"]))
                response = self._ddb.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self.table, []):
                    found.add(item["sk"]["S"].removeprefix("IMAGE#"))
                request = dict(response.get("UnprocessedKeys") or {})
        return found

    def commit_images(
        self,
        batch_id: str,
        outcomes: Sequence[ImageOutcome],
        settlement: Settlement | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        capped: bool = False,
    ) -> None:
        """Record images, add their totals to the summary and settle, in one transaction.

        Each image record is conditional on not existing, so a retried chunk can never
        charge an image twice: either the whole commit lands or none of it does. That
        promise holds only inside one transaction, so a commit larger than one is refused
        rather than split. The transaction's own write units are part of what it charges.
        """
        if not outcomes and settlement is None:
            return
        if len(outcomes) > MAX_IMAGES_PER_COMMIT:
            raise ValueError(
                f"{len(outcomes)} images in one commit; at most {MAX_IMAGES_PER_COMMIT} fit "
                "one DynamoDB transaction (keep chunks at or under that size)"
            )
        settlement = settlement or Settlement(chunk_id=outcomes[0].chunk_id)
        pk = batch_pk(batch_id)
        recorded_at = now_iso()
        actions: list[TransactWriteItemTypeDef] = []
        for outcome in outcomes:
            item = to_item(
                {
                    "pk": pk,
                    "sk": image_sk(outcome.image_id),
                    "recorded_at": recorded_at,
                    **outcome.model_dump(mode="json", exclude_none=True),
                }
            )
            actions.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(sk)",
                    }
                }
            )
        own_writes = sum(
            write_units(item_size(a["Put"]["Item"]), transactional=True) for a in actions
        )
        own_writes += write_units(SUMMARY_SIZE_BOUND, transactional=True)
        own_writes += write_units(ROLLUP_SIZE_BOUND, transactional=True) if outcomes else 0
        if settlement.has_reservation:
            own_writes += write_units(0, transactional=True)
            actions.append(
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": to_item({"pk": pk, "sk": reservation_sk(settlement.chunk_id)}),
                        "ConditionExpression": "attribute_exists(sk)",
                    }
                }
            )
        usage = settlement.usage + Usage(ddb_write_units=own_writes)
        overhead = (
            ceil_micro(price_usage(usage, settlement.prices).total) if settlement.prices else 0
        )
        adds = _summary_adds(outcomes, settlement, usage, overhead, capped=capped)
        actions.append(self._add_action(pk, SUMMARY_SK, adds, {}, "attribute_exists(pk)"))
        if outcomes:
            actions.append(
                self._rollup_action(batch_id, recorded_at[:10], outcomes, overhead, tags)
            )
        try:
            self._ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                raise ImagesAlreadyRecordedError(str(exc)) from exc
            # A TransactionConflict or throttle is transient: let the caller's retry handle it.
            raise

    def _rollup_action(
        self,
        batch_id: str,
        day: str,
        outcomes: Sequence[ImageOutcome],
        overhead: int,
        tags: Mapping[str, str] | None,
    ) -> TransactWriteItemTypeDef:
        """The batch's cost rollup for the day, ADDed to; per-model totals are top-level
        attributes (`model_spent#<model>`) because ADD works only on top-level attributes.
        Overhead is split by image count, the remainder to the first model."""
        models = sorted({o.model for o in outcomes})
        counts = {m: sum(1 for o in outcomes if o.model == m) for m in models}
        shares = {m: overhead * counts[m] // len(outcomes) for m in models}
        shares[models[0]] += overhead - sum(shares.values())
        inference = sum(o.cost_micro_usd for o in outcomes)
        adds = {
            "images": sum(1 for o in outcomes if o.status == "SUCCEEDED"),
            "inference_micro_usd": inference,
            "spent_micro_usd": inference + overhead,
        }
        for model in models:
            mine = [o for o in outcomes if o.model == model]
            model_inference = sum(o.cost_micro_usd for o in mine)
            adds[f"model_images#{model}"] = sum(1 for o in mine if o.status == "SUCCEEDED")
            adds[f"model_spent#{model}"] = model_inference + shares[model]
        return self._add_action(
            batch_pk(batch_id),
            rollup_sk(day),
            adds,
            {
                "gsi1pk": COSTS_PK,
                "gsi1sk": f"{day}#{batch_id}",
                "day": day,
                "batch_id": batch_id,
                "backend": outcomes[0].backend,
                "tags": dict(tags) if tags else None,
            },
            None,
        )

    def _add_action(
        self,
        pk: str,
        sk: str,
        adds: Mapping[str, int],
        sets: Mapping[str, Any],
        condition: str | None,
    ) -> TransactWriteItemTypeDef:
        sets = {k: v for k, v in sets.items() if v is not None}
        names = {f"#a{i}": name for i, name in enumerate(adds)}
        names.update({f"#s{i}": name for i, name in enumerate(sets)})
        values = {f":a{i}": value for i, value in enumerate(adds.values())}
        values.update({f":s{i}": value for i, value in enumerate(sets.values())})
        expression = "ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(adds)))
        if sets:
            expression += " SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(sets)))
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": to_item({"pk": pk, "sk": sk}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
        }
        if condition:
            update["ConditionExpression"] = condition
        return {"Update": update}  # type: ignore[typeddict-item]

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
            + write_units(SUMMARY_SIZE_BOUND, transactional=True)
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
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": to_item({"pk": pk, "sk": SUMMARY_SK}),
                            "UpdateExpression": "ADD reserved_micro_usd :r, "
                            "budget_left_micro_usd :neg",
                            "ConditionExpression": "budget_left_micro_usd >= :r",
                            "ExpressionAttributeValues": to_item({":r": amount, ":neg": -amount}),
                        }
                    },
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

    def write_off_holds(self, batch_id: str) -> int:
        """Holds no commit settled belong to attempts that died after they may have spent;
        each is charged in full as `unsettled_micro_usd` (an upper bound of what it spent)."""
        written_off = 0
        for hold in list(self.query_batch(batch_id, "RESERVATION#")):
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
            + write_units(SUMMARY_SIZE_BOUND, transactional=True)
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
                    self._add_action(
                        pk,
                        SUMMARY_SK,
                        {
                            "reserved_micro_usd": -amount,
                            "spent_micro_usd": amount,
                            "unsettled_micro_usd": amount,
                        },
                        {},
                        "attribute_exists(pk)",
                    ),
                ]
            )
        except ClientError as exc:
            if not _cancelled_by_condition(exc):
                raise
            return 0  # settled or written off by someone else meanwhile
        logger.warning("budget hold written off", extra={"hold": sk, "micro_usd": amount})
        return amount

    def roll_up_remainder(self, batch_id: str, summary: Mapping[str, Any]) -> int:
        """Add what the batch was charged outside chunk commits (ingest, finalize, written-off
        holds) to today's cost rollup, so cost over a time range sums to the batches' spend."""
        rolled = sum(int(r.get("spent_micro_usd", 0)) for r in self.query_batch(batch_id, "DAY#"))
        remainder = int(summary.get("spent_micro_usd", 0)) - rolled
        if remainder <= 0:
            return 0
        day = now_iso()[:10]
        model = (summary.get("models") or ["(none)"])[0]
        action = self._add_action(
            batch_pk(batch_id),
            rollup_sk(day),
            {"spent_micro_usd": remainder, f"model_spent#{model}": remainder},
            {
                "gsi1pk": COSTS_PK,
                "gsi1sk": f"{day}#{batch_id}",
                "day": day,
                "batch_id": batch_id,
                "backend": summary.get("backend"),
                "tags": summary.get("tags") or None,
            },
            None,
        )["Update"]
        self.meter.add(ddb_write_units=write_units(ROLLUP_SIZE_BOUND))
        self._ddb.update_item(**action)
        return remainder

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(
            TableName=self.table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True
        )
        item = response.get("Item")
        self.meter.add(ddb_read_units=read_units(item_size(item) if item else 0))
        return from_item(item) if item else None

    def query_batch(self, batch_id: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self._ddb.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": batch_pk(batch_id), ":prefix": sk_prefix}),
            ConsistentRead=True,
        )
        for page in pages:
            items = page.get("Items", [])
            self.meter.add(ddb_read_units=read_units(sum(item_size(i) for i in items)))
            for item in items:
                yield from_item(item)

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

    def image_records(self, batch_id: str) -> Iterator[dict[str, Any]]:
        return self.query_batch(batch_id, "IMAGE#")

    def failed_chunks(self, batch_id: str) -> dict[str, dict[str, Any]]:
        return {
            record["sk"].removeprefix("CHUNK#"): record
            for record in self.query_batch(batch_id, "CHUNK#")
            if record.get("status") == "FAILED"
        }

    def settle_batch(
        self,
        batch_id: str,
        status: BatchStatus,
        extra: Mapping[str, Any],
        adds: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Set the final status; `adds` are counters ADDed in the same update (finalize's own
        operations, charged to the batch)."""
        fields = {"status": status.value, "finished_at": now_iso(), **extra}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        plain_values = {f":v{i}": value for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        if adds:
            names.update({f"#a{i}": name for i, name in enumerate(adds)})
            plain_values.update({f":a{i}": value for i, value in enumerate(adds.values())})
            expression += " ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(adds)))
        values = to_item(plain_values)
        self.meter.add(ddb_write_units=write_units(SUMMARY_SIZE_BOUND))
        response = self._ddb.update_item(
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ConditionExpression="attribute_exists(pk)",
            ReturnValues="ALL_NEW",
        )
        return from_item(response["Attributes"])


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_token: str | None = None


def _encode_token(key: Mapping[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(from_item(key)).encode()).decode()


def _decode_token(token: str | None, allowed: set[str]) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        plain = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidTokenError("next_token is not one this API returned") from exc
    if not isinstance(plain, dict) or set(plain) != allowed:
        raise InvalidTokenError("next_token is not one this API returned")
    if not all(isinstance(v, str) for v in plain.values()):
        raise InvalidTokenError("next_token is not one this API returned")
    return to_item(plain)


class InvalidTokenError(ValueError):
    """A pagination token this API did not hand out."""


class LedgerQueries:
    """Read side of the ledger for the query API: every read is a GetItem or a Query."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self.table = table

    def _query(self, request: dict[str, Any], limit: int, key_names: set[str]) -> Page:
        """Queries until `limit` items pass the filter or the index is exhausted."""
        items: list[dict[str, Any]] = []
        start = _decode_token(request.pop("next_token", None), key_names)
        while True:
            if start:
                request["ExclusiveStartKey"] = start
            request["Limit"] = limit - len(items)
            response = self._ddb.query(**request)
            items.extend(from_item(item) for item in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start or len(items) >= limit:
                return Page(items=items, next_token=_encode_token(start))

    def list_batches(
        self,
        *,
        since: str,
        until: str,
        tag: tuple[str, str] | None,
        limit: int,
        next_token: str | None,
    ) -> Page:
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk BETWEEN :since AND :until",
            "ExpressionAttributeValues": to_item(
                {":pk": BATCH_LIST_PK, ":since": since, ":until": f"{until}~"}
            ),
            "ScanIndexForward": False,
            "next_token": next_token,
        }
        if tag is not None:
            request["FilterExpression"] = "#tags.#key = :value"
            request["ExpressionAttributeNames"] = {"#tags": "tags", "#key": tag[0]}
            request["ExpressionAttributeValues"][":value"] = {"S": tag[1]}
        return self._query(request, limit, {"pk", "sk", "gsi1pk", "gsi1sk"})

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(
            TableName=self.table, Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK})
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def items(
        self,
        batch_id: str,
        *,
        status: str | None,
        failure_class: str | None,
        limit: int,
        next_token: str | None,
    ) -> Page:
        values: dict[str, Any] = {":pk": batch_pk(batch_id), ":prefix": "IMAGE#"}
        filters, names = [], {}
        if status is not None:
            filters.append("#status = :status")
            names["#status"] = "status"
            values[":status"] = status
        if failure_class is not None:
            filters.append("failure_class = :failure_class")
            values[":failure_class"] = failure_class
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": to_item(values),
            "next_token": next_token,
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        if names:
            request["ExpressionAttributeNames"] = names
        return self._query(request, limit, {"pk", "sk"})

    def cost_rollups(self, since_day: str, until_day: str) -> Iterator[dict[str, Any]]:
        paginator = self._ddb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :pk AND gsi1sk BETWEEN :since AND :until",
            ExpressionAttributeValues=to_item(
                {":pk": COSTS_PK, ":since": since_day, ":until": f"{until_day}~"}
            ),
        ):
            for item in page.get("Items", []):
                yield from_item(item)
