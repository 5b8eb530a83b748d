"""DynamoDB adapter for the cost ledger: one table, money in integer micro-dollars.

Layout (pk = BATCH#<id>):
  sk SUMMARY          the batch summary, read in one GetItem; counters ADDed once per chunk
  sk IMAGE#<image-id> one record per image: outcome, cost, price source
  sk CHUNK#<chunk-id> written by the state machine when a chunk fails for good
  sk RESERVATION#<hold-id>   budget a running attempt holds (<chunk>@<attempt>); deleted when
                     that attempt's commit settles it
  sk DAY#<yyyy-mm-dd> cost rollup (totals, per-model totals), ADDed at each commit; in gsi1
                     under COSTS so cost over a time range is one Query, never a Scan

Budget (when the batch has max_cost_micro_usd): the summary keeps spent_micro_usd (what was
charged), reserved_micro_usd (held by running chunks) and budget_left_micro_usd, with
spent + reserved + budget_left + overhead_reserve = cap at every commit. A chunk reserves
before it spends (conditional on budget_left) and settles in its commit transaction. The
arithmetic is costs.budget's; this adapter writes it.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from imagebatch.aws.batch_items import record_attributes, record_from_item
from imagebatch.aws.dynamo_items import (
    SUMMARY_SK,
    add_action,
    batch_pk,
    cancelled_by_condition,
    failed_at,
    failed_within,
    image_sk,
    is_transient,
    now_iso,
    request_sk,
    reservation_sk,
    rollup_action,
    to_item,
    token_mismatch,
)
from imagebatch.aws.endpoint_usage import request_put
from imagebatch.aws.image_index import ImageIndex, entries, entry_put
from imagebatch.aws.ledger_settle import BatchSettlement
from imagebatch.aws.network import NETWORK_ERRORS
from imagebatch.costs import budget
from imagebatch.costs.settlement import Settlement, price_commit
from imagebatch.costs.usage import (
    Meter,
    indexed_write_units,
    item_size,
    read_units,
    rollup_write_units,
    summary_write_units,
    tags_bytes,
    write_units,
)
from imagebatch.errors import BatchFinalizingError, ImagesAlreadyRecordedError, StorageError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import ImageOutcome, MadeImage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

# DynamoDB caps a transaction at 100 actions; three are the summary update, the day's cost
# rollup and the deletion of the chunk's budget hold.
MAX_IMAGES_PER_COMMIT = 97
_TRANSACTION_LIMIT = 100
# A conflicting writer (another chunk's commit on the summary) is gone within milliseconds;
# four tries over about a second outlast it without eating the chunk's time.
COMMIT_ATTEMPTS = 4
COMMIT_BACKOFF_S = 0.1


logger = Logger(child=True)


class Ledger(BatchSettlement):
    """Batch records, image commits and settlement; budget holds come from BudgetHolds."""

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        response = self._ddb.get_item(
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        self.meter.add(ddb_read_units=read_units(self.saw_summary(batch_id, item) if item else 0))
        return record_from_item(item) if item else None

    def create_batch(self, batch_id: str, attributes: BatchRecord | Mapping[str, Any]) -> bool:
        """Write the batch summary once; False when this batch already exists. A mapping is
        read as a BatchRecord's stored attributes."""
        given = (
            attributes
            if isinstance(attributes, BatchRecord)
            # None means absent, as it did when the mapping was written as it came
            else BatchRecord.model_validate(
                {k: v for k, v in attributes.items() if v is not None} | {"batch_id": batch_id}
            )
        )
        created_at = given.created_at or now_iso()
        record = {
            "images_succeeded": 0,
            "images_failed": 0,
            "cost_micro_usd": 0,
            "spent_micro_usd": 0,
            "reserved_micro_usd": 0,
            "chunk_commits": 0,
            **record_attributes(
                given.model_copy(update={"batch_id": batch_id, "created_at": created_at})
            ),
        }
        cap = given.max_cost_micro_usd
        if cap is not None:
            reserve = given.overhead_reserve_micro_usd
            record["overhead_reserve_micro_usd"] = reserve
            # the endpoint's wake, held from the start: no chunk can spend it
            wake = given.endpoint_wake_micro_usd
            if wake:
                record["reserved_micro_usd"] = wake
                record["wake_held_micro_usd"] = wake
            record["budget_left_micro_usd"] = budget.opening_budget_left(
                int(cap), reserve, int(record["spent_micro_usd"]), wake
            )
        item = to_item(record)
        # the summary and its gsi1 replica (the batch list)
        size = self.saw_summary(batch_id, item)
        self.meter.add(ddb_write_units=indexed_write_units(size, transactional=False))
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
        sks = [image_sk(image_id) for image_id in image_ids]
        items = self.get_many(batch_pk(batch_id), sks, projection="sk")
        return {item["sk"].removeprefix("IMAGE#") for item in items}

    def find_made_images(self, identities: Sequence[str]) -> dict[str, MadeImage]:
        """Where images of these identities were made (aws.image_index), by identity."""
        return ImageIndex(self._ddb, self.table, self.meter).find(identities)

    # Kept whole: the order of one transaction's actions (records, summary, rollup, hold); its
    # parts are already helpers and the order is read in one place.
    def commit_images(
        self,
        batch_id: str,
        outcomes: Sequence[ImageOutcome],
        settlement: Settlement | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        capped: bool = False,
        rollup_model: str | None = None,
    ) -> int:
        """Record images, add their totals to the summary and settle, in one transaction;
        returns what the commit charged (micro-dollars).

        A commit without images (a contact sheet, a request whose images another attempt
        recorded) adds its charge to the day's rollup under `rollup_model` when given.

        Each image record is conditional on not existing, so a retried chunk can never
        charge an image twice: either the whole commit lands or none of it does. That
        promise holds only inside one transaction, so a commit larger than one is refused
        rather than split. The transaction's own write units are part of what it charges.
        """
        if not outcomes and settlement is None:
            return 0
        if len(outcomes) > MAX_IMAGES_PER_COMMIT:
            raise ValueError(
                f"{len(outcomes)} images in one commit; at most {MAX_IMAGES_PER_COMMIT} fit "
                "one DynamoDB transaction (keep chunks at or under that size)"
            )
        settlement = settlement or Settlement(chunk_id=outcomes[0].chunk_id)
        pk = batch_pk(batch_id)
        recorded_at = now_iso()
        guards = self._guards(pk, settlement, recorded_at)
        actions = guards + self._image_puts(pk, outcomes, recorded_at)
        if settlement.endpoint and settlement.endpoint_request is not None:
            actions.append(
                request_put(self.table, settlement.endpoint, settlement.endpoint_request)
            )
        late_entries = self._index_entries(batch_id, outcomes, actions, recorded_at)
        own_writes = _own_write_units(
            actions,
            rolls_up=bool(outcomes) or rollup_model is not None,
            tag_bytes=tags_bytes(tags),
        )
        own_writes += sum(write_units(item_size(item)) for item in late_entries)
        charge = price_commit(
            outcomes, settlement, own_writes, capped=capped, rollup_model=rollup_model
        )
        fence_at = len(actions) if settlement.fenced else None
        actions.append(
            add_action(
                self.table,
                pk,
                SUMMARY_SK,
                {**charge.summary_adds, **_served(settlement)},
                {},
                condition="attribute_exists(pk)"
                + (" AND attribute_not_exists(finalizing_at)" if settlement.fenced else ""),
            )
        )
        if charge.rollup is not None:
            backend = outcomes[0].backend if outcomes else None
            actions.append(
                rollup_action(
                    self.table,
                    recorded_at[:10],
                    charge.rollup,
                    batch_id=batch_id,
                    backend=backend,
                    tags=tags,
                )
            )
        self._transact(
            actions,
            guards=len(guards),
            fence_at=fence_at,
            token=_request_token(batch_id, settlement, outcomes, recorded_at),
            landed=lambda: self._landed(pk, outcomes, settlement, recorded_at),
        )
        if late_entries:
            # counted in own_writes above: the commit charged them; the meter must not again
            ImageIndex(self._ddb, self.table, Meter()).write(late_entries)
        return charge.micro_usd

    def _landed(
        self,
        pk: str,
        outcomes: Sequence[ImageOutcome],
        settlement: Settlement,
        recorded_at: str,
    ) -> bool:
        """Whether this commit's own transaction is in the table: its images (or, without
        images, its request marker) carry this commit's recorded_at and its costs. Records
        another attempt wrote differ in one or the other, and are never claimed."""
        expected: dict[str, tuple[str, int | None, str]]
        if outcomes:
            expected = {
                image_sk(o.image_id): (recorded_at, o.cost_micro_usd, o.chunk_id) for o in outcomes
            }
        elif settlement.request_key is not None:
            expected = {
                request_sk(settlement.request_key): (recorded_at, None, settlement.chunk_id)
            }
        else:
            return False
        found = {
            item["sk"]: (
                item.get("recorded_at"),
                int(item["cost_micro_usd"]) if outcomes and "cost_micro_usd" in item else None,
                item.get("chunk_id"),
            )
            for item in self.get_many(pk, list(expected))
        }
        return found == expected

    def _index_entries(
        self,
        batch_id: str,
        outcomes: Sequence[ImageOutcome],
        actions: list[TransactWriteItemTypeDef],
        recorded_at: str,
    ) -> list[dict[str, Any]]:
        """The image index's entries for the commit's made images (aws.image_index): appended
        to `actions` while the transaction has room (the summary and the rollup still to
        come), the rest returned, to be written once the transaction has landed (an entry
        must never name an image the ledger does not hold)."""
        index = entries(batch_id, outcomes, recorded_at)
        room = max(0, _TRANSACTION_LIMIT - len(actions) - 2)
        actions.extend(entry_put(self.table, item) for item in index[:room])
        return index[room:]

    def _guards(
        self, pk: str, settlement: Settlement, recorded_at: str
    ) -> list[TransactWriteItemTypeDef]:
        """The actions ahead of the images whose failed condition means "settled elsewhere":
        the request's once-only marker, the deletion of the hold this commit settles."""
        guards: list[TransactWriteItemTypeDef] = []
        if settlement.request_key is not None:
            marker = {
                "pk": pk,
                "sk": request_sk(settlement.request_key),
                "chunk_id": settlement.chunk_id,
                "rework_micro_usd": settlement.rework_micro_usd,
                "recorded_at": recorded_at,
            }
            guards.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": to_item(marker),
                        "ConditionExpression": "attribute_not_exists(sk)",
                    }
                }
            )
        if settlement.has_reservation:
            guards.append(
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": to_item({"pk": pk, "sk": reservation_sk(settlement.hold_key)}),
                        # the amount this commit settles: a hold written off meanwhile (or
                        # settled by another delivery) is not settled twice
                        "ConditionExpression": "amount_micro_usd = :a",
                        "ExpressionAttributeValues": to_item({":a": settlement.reserved_micro_usd}),
                    }
                }
            )
        return guards

    def _image_puts(
        self, pk: str, outcomes: Sequence[ImageOutcome], recorded_at: str
    ) -> list[TransactWriteItemTypeDef]:
        """One conditional Put per image: a retried commit can never record an image twice."""
        return [
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

    def _transact(
        self,
        actions: list[TransactWriteItemTypeDef],
        *,
        guards: int = 0,
        fence_at: int | None = None,
        token: str,
        landed: Callable[[], bool],
    ) -> None:
        """One transaction, retried here when DynamoDB says the same request may succeed
        later (a conflict with another writer, throttling): a commit carries images already
        paid for, so giving up at the first conflict would lose their charge. A transaction
        that failed wrote nothing, so retrying it is safe; a connection error or read
        timeout is retried the same way (botocore's own retries already ran out).

        A read timeout may hide a transaction that landed. The retry carries the same
        `token`, which DynamoDB answers as done for 10 minutes; where it does not (later,
        or an endpoint that ignores tokens) the retry is refused by the conditions its own
        first try wrote, and `landed` tells that apart from another attempt's records. The
        summary update at `fence_at` failing its condition means finalize has started."""
        ambiguous = False
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                self._ddb.transact_write_items(TransactItems=actions, ClientRequestToken=token)
                return
            except ClientError as exc:
                refused = cancelled_by_condition(exc) or token_mismatch(exc)
                if refused and ambiguous and landed():
                    logger.info("ledger commit had landed; its reply was lost")
                    return
                if fence_at is not None and failed_at(exc, fence_at):
                    raise BatchFinalizingError(f"ledger commit: {exc}") from exc
                if cancelled_by_condition(exc):
                    raise ImagesAlreadyRecordedError(
                        str(exc), settled_elsewhere=failed_within(exc, guards)
                    ) from exc
                transient = is_transient(exc)
                if not transient or attempt == COMMIT_ATTEMPTS - 1:
                    raise StorageError(f"ledger commit: {exc}", transient=transient) from exc
                _back_off(attempt, exc)
            except NETWORK_ERRORS as exc:
                # The same path as a throttle: retried, then the pending file. Repeating
                # the transaction is safe: every image Put is conditional.
                ambiguous = True
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise StorageError(f"ledger commit: {exc}", transient=True) from exc
                _back_off(attempt, exc)

    def image_records(
        self, batch_id: str, *, after_image_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The batch's image records in id order (after `after_image_id` when given)."""
        after = image_sk(after_image_id) if after_image_id is not None else None
        return self.query_batch(batch_id, "IMAGE#", after_sk=after)


def _request_token(
    batch_id: str, settlement: Settlement, outcomes: Sequence[ImageOutcome], recorded_at: str
) -> str:
    """TransactWriteItems' ClientRequestToken (at most 36 characters): one per commit, the
    same across its retries, from the attempt's hold, its images and when it was built."""
    parts = [batch_id, settlement.chunk_id, settlement.hold_key, settlement.request_key or ""]
    parts += [recorded_at, *sorted(o.image_id for o in outcomes)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:36]


def _served(settlement: Settlement) -> dict[str, int]:
    """A commit that records an endpoint request counts it on the summary: a batch the
    endpoint served keeps its wake for the window's charge (finalize releases it otherwise)."""
    return {"endpoint_requests": 1} if settlement.endpoint_request is not None else {}


def _back_off(attempt: int, exc: Exception) -> None:
    delay = random.uniform(0, COMMIT_BACKOFF_S * 2**attempt)
    logger.warning("ledger commit retried", extra={"error": str(exc), "delay": delay})
    time.sleep(delay)


def _own_write_units(
    actions: Sequence[TransactWriteItemTypeDef], *, rolls_up: bool, tag_bytes: int
) -> int:
    """What a commit's transaction writes: its actions so far (a Delete counts as the least
    a write is), the summary update and, when it rolls up, the day's rollup, each at the
    size bound plus the batch's tags (both carry them) and with its gsi1 replica (their
    size is known only once the charge is)."""
    units = sum(
        write_units(item_size(a["Put"]["Item"]) if "Put" in a else 0, transactional=True)
        for a in actions
    )
    units += summary_write_units(tag_bytes)
    return units + (rollup_write_units(tag_bytes) if rolls_up else 0)
