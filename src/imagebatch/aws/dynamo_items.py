"""DynamoDB item helpers for the ledger table: keys, (de)serialisation, update actions.

Key layout (one table; see aws.ledger for what each item holds):
  pk BATCH#<id>     sk SUMMARY | IMAGE#<image> | CHUNK#<chunk> | RESERVATION#<hold> | DAY#<day>
                       | REQUEST#<self-hosted request>
  pk BATCHES (gsi1) the batch list;  pk COSTS (gsi1) the day rollups
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

SUMMARY_SK = "SUMMARY"
BATCH_LIST_PK = "BATCHES"
COSTS_PK = "COSTS"

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


def cancelled_by_condition(exc: ClientError) -> bool:
    if exc.response["Error"]["Code"] != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    if not reasons:
        # Some endpoints put the reasons only in the message.
        return "ConditionalCheckFailed" in exc.response["Error"].get("Message", "")
    return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)


# Errors after which the same request may succeed (AWS DynamoDB error handling docs:
# throttling, 5xx, and a transaction cancelled by a conflicting one rather than a condition).
_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        "TransactionConflictException",
    }
)
_TRANSIENT_REASONS = frozenset(
    {"TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"}
)


def is_transient(exc: ClientError) -> bool:
    code = exc.response["Error"]["Code"]
    if code != "TransactionCanceledException":
        return code in _TRANSIENT_CODES
    reasons = {r.get("Code") for r in exc.response.get("CancellationReasons") or []}
    if not reasons:
        message = exc.response["Error"].get("Message", "")
        reasons = {r for r in _TRANSIENT_REASONS if r in message}
    return bool(reasons & _TRANSIENT_REASONS) and "ConditionalCheckFailed" not in reasons


def reservation_sk(chunk_id: str) -> str:
    return f"RESERVATION#{chunk_id}"


def request_sk(request_key: str) -> str:
    """A self-hosted request whose result was recorded (its commit is once-only)."""
    return f"REQUEST#{request_key}"


def rollup_sk(day: str) -> str:
    return f"DAY#{day}"


def add_action(
    table: str,
    pk: str,
    sk: str,
    adds: Mapping[str, int],
    sets: Mapping[str, Any],
    *,
    condition: str | None = None,
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
        "TableName": table,
        "Key": to_item({"pk": pk, "sk": sk}),
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_item(values),
    }
    if condition:
        update["ConditionExpression"] = condition
    return {"Update": update}  # type: ignore[typeddict-item]
