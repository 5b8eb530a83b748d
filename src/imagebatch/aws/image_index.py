"""The image index in the ledger table: an identity -> where an image of it was made.

  pk IMAGEID#<identity sha256>  sk SOURCE   batch_id, image_id, output_key, recorded_at

Written with the image record (aws.ledger.commit_images, in the same transaction while it has
room, otherwise right after it), read once per chunk (one BatchGetItem per 100 identities).
An entry is unconditional and last-writer-wins: two batches that make one identity at once
both pay and both images stay recorded, each once; the entry names one of them. An entry
whose object was deleted is a miss (the reader checks the object, pipeline.reuse).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from imagebatch.aws.dynamo_items import from_item, to_item
from imagebatch.costs.usage import Meter, item_size, write_units
from imagebatch.models.records import ImageOutcome, MadeImage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

SOURCE_SK = "SOURCE"
_BATCH_GET_LIMIT = 100
_BATCH_WRITE_LIMIT = 25
# BatchWriteItem hands back what it could not write under throttling; a few short waits
# outlast it, and an entry still unwritten is only a reuse missed later, never a lost image.
_WRITE_ATTEMPTS = 5


def identity_pk(identity: str) -> str:
    return f"IMAGEID#{identity}"


def entries(
    batch_id: str, outcomes: Iterable[ImageOutcome], recorded_at: str
) -> list[dict[str, Any]]:
    """The index entries of a commit: images made and stored, one per identity (a
    transaction may not touch one item twice). A reused image is not re-indexed: its entry
    already names the image it was copied from."""
    made: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        identity, key = outcome.identity_sha256, outcome.output_key
        if outcome.status != "SUCCEEDED" or outcome.reused or not identity or not key:
            continue
        made.setdefault(
            identity,
            to_item(
                {
                    "pk": identity_pk(identity),
                    "sk": SOURCE_SK,
                    "batch_id": batch_id,
                    "image_id": outcome.image_id,
                    "output_key": key,
                    "recorded_at": recorded_at,
                }
            ),
        )
    return list(made.values())


def entry_put(table: str, item: dict[str, Any]) -> TransactWriteItemTypeDef:
    return {"Put": {"TableName": table, "Item": item}}


class ImageIndex:
    """Reads and late writes of the index; every request ticks `meter`."""

    def __init__(self, client: DynamoDBClient, table: str, meter: Meter) -> None:
        self._ddb = client
        self.table = table
        self.meter = meter

    def find(self, identities: Sequence[str]) -> dict[str, MadeImage]:
        """The entries of `identities` that exist, by identity (eventually consistent reads:
        an entry a moment old missed is an image paid again, never a wrong one)."""
        wanted = list(dict.fromkeys(identities))
        found: dict[str, MadeImage] = {}
        for start in range(0, len(wanted), _BATCH_GET_LIMIT):
            keys = [
                to_item({"pk": identity_pk(identity), "sk": SOURCE_SK})
                for identity in wanted[start : start + _BATCH_GET_LIMIT]
            ]
            request: dict[str, Any] = {self.table: {"Keys": keys}}
            while request:
                response = self._ddb.batch_get_item(RequestItems=request)
                items = response["Responses"].get(self.table, [])
                # eventually consistent: half a unit per 4 KB read, at least half a unit a key
                self.meter.add(ddb_read_units=max(1, (len(request[self.table]["Keys"]) + 1) // 2))
                for raw in items:
                    plain = from_item(raw)
                    identity = str(plain["pk"]).removeprefix("IMAGEID#")
                    found[identity] = MadeImage(
                        identity_sha256=identity,
                        batch_id=plain["batch_id"],
                        image_id=plain["image_id"],
                        output_key=plain["output_key"],
                    )
                request = dict(response.get("UnprocessedKeys") or {})
        return found

    def write(self, items: Sequence[dict[str, Any]]) -> int:
        """Entries a commit's transaction had no room for, after it landed; the write units."""
        units = 0
        for start in range(0, len(items), _BATCH_WRITE_LIMIT):
            requests: list[Any] = [
                {"PutRequest": {"Item": item}} for item in items[start : start + _BATCH_WRITE_LIMIT]
            ]
            units += sum(write_units(item_size(r["PutRequest"]["Item"])) for r in requests)
            for attempt in range(_WRITE_ATTEMPTS):
                response = self._ddb.batch_write_item(RequestItems={self.table: requests})
                requests = list((response.get("UnprocessedItems") or {}).get(self.table, []))
                if not requests:
                    break
                time.sleep(0.05 * 2**attempt)
        self.meter.add(ddb_write_units=units)
        return units
