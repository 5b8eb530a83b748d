"""DynamoDB item helpers for the ledger table: keys, (de)serialisation, update actions.

Key layout (one table; see aws.ledger for what each item holds):
  pk BATCH#<id>     sk SUMMARY | IMAGE#<image> | CHUNK#<chunk> | RESERVATION#<hold> | DAY#<day>
                       | REQUEST#<self-hosted request>
  pk ENDPOINT#<name>  (aws.endpoint_usage) samples, requests, windows, the unattributed DAY#
  pk IMAGEID#<identity>  sk SOURCE  (aws.image_index) where an image of that identity was made
  pk BATCHES (gsi1) the batch list;  pk COSTS (gsi1) the day rollups
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from imagebatch.costs.budget import BUDGET_LEFT, OVERHEAD_RESERVE, WAKE_HELD, BudgetMove

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

SUMMARY_SK = "SUMMARY"
BATCH_LIST_PK = "BATCHES"
COSTS_PK = "COSTS"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def batch_pk(batch_id: str) -> str:
    return f"BATCH#{batch_id}"


def endpoint_pk(endpoint: str) -> str:
    return f"ENDPOINT#{endpoint}"


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


def failed_within(exc: ClientError, first: int) -> bool:
    """Whether one of the transaction's first `first` actions failed its condition."""
    if first == 0:
        return False
    reasons = exc.response.get("CancellationReasons") or []
    return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons[:first])


def failed_at(exc: ClientError, index: int) -> bool:
    """Whether the transaction's action at `index` failed its condition."""
    reasons = exc.response.get("CancellationReasons") or []
    return index < len(reasons) and reasons[index].get("Code") == "ConditionalCheckFailed"


def token_mismatch(exc: ClientError) -> bool:
    """A ClientRequestToken DynamoDB saw within 10 minutes with other parameters."""
    return exc.response["Error"]["Code"] == "IdempotentParameterMismatchException"


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


def reported_write_units(consumed: Any) -> int:
    """The capacity units a write's ConsumedCapacity reports (one entry, or a list of one a
    table for a transaction), rounded up; 0 when the response carries none."""
    entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
    total = sum((Decimal(str(entry.get("CapacityUnits", 0))) for entry in entries), Decimal(0))
    return math.ceil(total)


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
    condition_values: Mapping[str, Any] | None = None,
) -> TransactWriteItemTypeDef:
    """ADD `adds` and SET `sets` (those not None) on one item; `condition_values` are the
    values `condition` names (placeholders other than :aN and :sN)."""
    sets = {k: v for k, v in sets.items() if v is not None}
    names = {f"#a{i}": name for i, name in enumerate(adds)}
    names.update({f"#s{i}": name for i, name in enumerate(sets)})
    values = {f":a{i}": value for i, value in enumerate(adds.values())}
    values.update({f":s{i}": value for i, value in enumerate(sets.values())})
    values.update(condition_values or {})
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


def budget_action(
    table: str,
    pk: str,
    move: BudgetMove,
    *,
    also: Mapping[str, int] | None = None,
    condition: str | None = None,
    condition_values: Mapping[str, Any] | None = None,
) -> TransactWriteItemTypeDef:
    """A budget move (costs.budget) as one update of the batch summary: an ADD per counter
    it touches, after `also` (counters saying what the money went to), and what the move
    needs as conditions ANDed to `condition`."""
    conditions = [condition] if condition else []
    values: dict[str, Any] = dict(condition_values or {})
    if move.needs_budget_left is not None:
        conditions.append(f"{BUDGET_LEFT} >= :need_left")
        values[":need_left"] = move.needs_budget_left
    if move.needs_overhead_reserve is not None:
        conditions.append(f"{OVERHEAD_RESERVE} = :need_reserve")
        values[":need_reserve"] = move.needs_overhead_reserve
    if move.needs_wake_held is not None:
        conditions.append(f"{WAKE_HELD} = :need_wake")
        values[":need_wake"] = move.needs_wake_held
    return add_action(
        table,
        pk,
        SUMMARY_SK,
        {**(also or {}), **move.adds()},
        {},
        condition=" AND ".join(conditions) or None,
        condition_values=values,
    )


def rollup_action(
    table: str,
    day: str,
    adds: Mapping[str, int],
    *,
    batch_id: str,
    backend: str | None,
    tags: Mapping[str, str] | None = None,
    endpoint: str | None = None,
) -> TransactWriteItemTypeDef:
    """The day's cost rollup, ADDed to; in gsi1 under COSTS, so cost over a time range is
    one Query, never a Scan. A batch's rollup lives in the batch's partition; with
    `endpoint`, the instance time no batch was charged lives in the endpoint's (its
    batch_id the unattributed label), so /costs shows it as a line of its own."""
    owner = endpoint_pk(endpoint) if endpoint is not None else batch_id
    return add_action(
        table,
        endpoint_pk(endpoint) if endpoint is not None else batch_pk(batch_id),
        rollup_sk(day),
        adds,
        {
            "gsi1pk": COSTS_PK,
            "gsi1sk": f"{day}#{owner}",
            "day": day,
            "batch_id": batch_id,
            "endpoint": endpoint,
            "backend": backend,
            "tags": dict(tags) if tags else None,
        },
    )
