"""DynamoDB adapter for the cost ledger: one table, money in integer micro-dollars.

Layout (pk = BATCH#<id>):
  sk SUMMARY          the batch summary, read in one GetItem; counters ADDed once per chunk
  sk IMAGE#<image-id> one record per image: outcome, cost, price source
  sk CHUNK#<chunk-id> written by the state machine when a chunk fails for good
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from imagebatch.records import BatchStatus, ImageOutcome

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

SUMMARY_SK = "SUMMARY"
BATCH_LIST_PK = "BATCHES"
# DynamoDB caps a transaction at 100 actions; one is the summary update.
MAX_IMAGES_PER_COMMIT = 99
_BATCH_GET_LIMIT = 100

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


class Ledger:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self.table = table

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        response = self._ddb.get_item(
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def create_batch(self, batch_id: str, attributes: Mapping[str, Any]) -> bool:
        """Write the batch summary once; False when this batch already exists."""
        created_at = attributes.get("created_at") or now_iso()
        record = {
            **attributes,
            "pk": batch_pk(batch_id),
            "sk": SUMMARY_SK,
            "batch_id": batch_id,
            "created_at": created_at,
            "gsi1pk": BATCH_LIST_PK,
            "gsi1sk": f"{created_at}#{batch_id}",
            "images_succeeded": 0,
            "images_failed": 0,
            "cost_micro_usd": 0,
            "chunk_commits": 0,
        }
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item=to_item(record),
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
                response = self._ddb.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self.table, []):
                    found.add(item["sk"]["S"].removeprefix("IMAGE#"))
                request = dict(response.get("UnprocessedKeys") or {})
        return found

    def commit_images(self, batch_id: str, outcomes: Sequence[ImageOutcome]) -> None:
        """Record images and add their totals to the summary in one transaction.

        Each image record is conditional on not existing, so a retried chunk can never
        charge an image twice: either the whole commit lands or none of it does. That
        promise holds only inside one transaction, so a commit larger than one is refused
        rather than split.
        """
        if not outcomes:
            return
        if len(outcomes) > MAX_IMAGES_PER_COMMIT:
            raise ValueError(
                f"{len(outcomes)} images in one commit; at most {MAX_IMAGES_PER_COMMIT} fit "
                "one DynamoDB transaction (keep chunks at or under that size)"
            )
        pk = batch_pk(batch_id)
        recorded_at = now_iso()
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": to_item(
                        {
                            "pk": pk,
                            "sk": image_sk(outcome.image_id),
                            "recorded_at": recorded_at,
                            **outcome.model_dump(mode="json", exclude_none=True),
                        }
                    ),
                    "ConditionExpression": "attribute_not_exists(sk)",
                }
            }
            for outcome in outcomes
        ]
        succeeded = sum(1 for o in outcomes if o.status == "SUCCEEDED")
        actions.append(
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item({"pk": pk, "sk": SUMMARY_SK}),
                    "UpdateExpression": (
                        "ADD images_succeeded :ok, images_failed :failed, "
                        "cost_micro_usd :cost, chunk_commits :one"
                    ),
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": to_item(
                        {
                            ":ok": succeeded,
                            ":failed": len(outcomes) - succeeded,
                            ":cost": sum(o.cost_micro_usd for o in outcomes),
                            ":one": 1,
                        }
                    ),
                }
            }
        )
        try:
            self._ddb.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if _cancelled_by_condition(exc):
                raise ImagesAlreadyRecordedError(str(exc)) from exc
            # A TransactionConflict or throttle is transient: let the caller's retry handle it.
            raise

    def query_batch(self, batch_id: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self._ddb.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": batch_pk(batch_id), ":prefix": sk_prefix}),
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                yield from_item(item)

    def image_records(self, batch_id: str) -> Iterator[dict[str, Any]]:
        return self.query_batch(batch_id, "IMAGE#")

    def failed_chunks(self, batch_id: str) -> dict[str, dict[str, Any]]:
        return {
            record["sk"].removeprefix("CHUNK#"): record
            for record in self.query_batch(batch_id, "CHUNK#")
            if record.get("status") == "FAILED"
        }

    def settle_batch(
        self, batch_id: str, status: BatchStatus, extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        fields = {"status": status.value, "finished_at": now_iso(), **extra}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = to_item({f":v{i}": value for i, value in enumerate(fields.values())})
        assignments = ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        response = self._ddb.update_item(
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            UpdateExpression=f"SET {assignments}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ConditionExpression="attribute_exists(pk)",
            ReturnValues="ALL_NEW",
        )
        return from_item(response["Attributes"])
