"""Read side of the ledger for the query API: every read is a GetItem or a Query, pages
carry an opaque token."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from imagebatch.aws.batch_items import record_from_item, record_from_plain
from imagebatch.aws.dynamo_items import (
    BATCH_LIST_PK,
    COSTS_PK,
    SUMMARY_SK,
    batch_pk,
    from_item,
    to_item,
)
from imagebatch.errors import InvalidTokenError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.tenancy import TenantScope

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


#: Ledger items one API call may read (evaluated by a Query, before its filter): a rare tag
#: filter or a long /costs range then costs at most this many read units' worth per request
#: and answers with a next_token, instead of paging the whole index inside one request.
MAX_SCANNED_PER_CALL = 1000


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_token: str | None = None
    #: items the Query read for this page (DynamoDB's ScannedCount, summed)
    scanned: int = 0


class BatchListPage(BaseModel):
    """A page of the batch list: the summaries, and the token for the next page."""

    items: list[BatchRecord]
    next_token: str | None = None
    scanned: int = 0


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


class LedgerQueries:
    """Read side of the ledger for the query API: every read is a GetItem or a Query."""

    def __init__(
        self, client: DynamoDBClient, table: str, *, max_scanned: int = MAX_SCANNED_PER_CALL
    ) -> None:
        self._ddb = client
        self.table = table
        self.max_scanned = max_scanned

    def _query(self, request: dict[str, Any], limit: int, key_names: set[str]) -> Page:
        """Queries until `limit` items pass the filter, the index is exhausted, or
        `max_scanned` items were read (Query's Limit counts items read, before the filter):
        a page may then hold fewer than `limit` items and still carry a next_token."""
        items: list[dict[str, Any]] = []
        scanned = 0
        start = _decode_token(request.pop("next_token", None), key_names)
        while True:
            if start:
                request["ExclusiveStartKey"] = start
            request["Limit"] = min(limit - len(items), self.max_scanned - scanned)
            response = self._ddb.query(**request)
            items.extend(from_item(item) for item in response.get("Items", []))
            scanned += int(response.get("ScannedCount", 0))
            start = response.get("LastEvaluatedKey")
            if not start or len(items) >= limit or scanned >= self.max_scanned:
                return Page(items=items, next_token=_encode_token(start), scanned=scanned)

    def list_batches(
        self,
        *,
        since: str,
        until: str,
        tag: tuple[str, str] | None,
        limit: int,
        next_token: str | None,
        scope: TenantScope | None = None,
    ) -> BatchListPage:
        """Newest first; with a scope, only batches whose tag it admits (a filter: the items
        it skips are read, within max_scanned)."""
        if scope is not None and not scope.teams:
            return BatchListPage(items=[])
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
        filters: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = request["ExpressionAttributeValues"]
        if tag is not None:
            filters.append("#tags.#key = :value")
            names |= {"#tags": "tags", "#key": tag[0]}
            values[":value"] = {"S": tag[1]}
        if scope is not None:
            teams = sorted(scope.teams)
            operands = ", ".join(f":team{i}" for i in range(len(teams)))
            filters.append(f"#tags.#tenant IN ({operands})")
            names |= {"#tags": "tags", "#tenant": scope.batch_tag}
            values |= {f":team{i}": {"S": team} for i, team in enumerate(teams)}
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
            request["ExpressionAttributeNames"] = names
        page = self._query(request, limit, {"pk", "sk", "gsi1pk", "gsi1sk"})
        return BatchListPage(
            items=[record_from_plain(item) for item in page.items],
            next_token=page.next_token,
            scanned=page.scanned,
        )

    def batch(self, batch_id: str) -> BatchRecord | None:
        response = self._ddb.get_item(
            TableName=self.table, Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK})
        )
        item = response.get("Item")
        return record_from_item(item) if item else None

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

    def cost_rollup_page(self, since_day: str, until_day: str, *, next_token: str | None) -> Page:
        """At most `max_scanned` day rollups of the range (the query API's /costs: one
        bounded read per request, the caller sums the pages)."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk BETWEEN :since AND :until",
            "ExpressionAttributeValues": to_item(
                {":pk": COSTS_PK, ":since": since_day, ":until": f"{until_day}~"}
            ),
            "next_token": next_token,
        }
        return self._query(request, self.max_scanned, {"pk", "sk", "gsi1pk", "gsi1sk"})

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
