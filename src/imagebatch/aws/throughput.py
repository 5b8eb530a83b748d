"""What the endpoint measured, per model and call shape, in the ledger table.

  pk ENDPOINT#<name>  sk THROUGHPUT#<model>#<shape key>   seconds_us, images (ADDed)

record_result adds every finished call; ingest (estimates) and submit_chunk (budget holds)
read the mean seconds per image of the shapes they need, so a shape the endpoint has served
is estimated from its own measurements rather than from the data file's reference figure.

The ADDs go in one TransactWriteItems, whose ClientRequestToken (botocore's, the same on each
resend of one call) DynamoDB answers as done when a reply was lost and botocore sends it again:
a plain UpdateItem's ADD counted that call twice. A result's retry never adds again (its
commit is refused first), so the resend is the only way one call could count twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from imagebatch.aws.dynamo_items import endpoint_pk, from_item, now_iso, to_item
from imagebatch.aws.ledger_holds import LedgerTable
from imagebatch.costs.sagemaker_seconds import Measured
from imagebatch.costs.usage import write_units
from imagebatch.models.sagemaker_contract import ServingCall

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

_MICRO = Decimal(1_000_000)
_BATCH_GET_LIMIT = 100
_TRANSACTION_LIMIT = 100  # TransactWriteItems' most items
# A throughput item (keys, two counters, a timestamp) stays under 1 KB, written in a
# transaction: two write units.
THROUGHPUT_WRITE_UNITS = write_units(0, transactional=True)


def throughput_sk(model: str, key: str) -> str:
    return f"THROUGHPUT#{model}#{key}"


class EndpointThroughput(LedgerTable):
    def measured(self, endpoint: str, model: str, keys: Iterable[str]) -> dict[str, Measured]:
        wanted = sorted(set(keys))
        found: dict[str, Measured] = {}
        for start in range(0, len(wanted), _BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [
                        to_item({"pk": endpoint_pk(endpoint), "sk": throughput_sk(model, key)})
                        for key in wanted[start : start + _BATCH_GET_LIMIT]
                    ],
                    "ConsistentRead": True,
                }
            }
            while request:
                self.meter.add(ddb_read_units=len(request[self.table]["Keys"]))
                response = self._ddb.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self.table, []):
                    record = from_item(item)
                    found[str(record["shape"])] = Measured(
                        seconds=Decimal(int(record["seconds_us"])) / _MICRO,
                        images=int(record["images"]),
                    )
                request = dict(response.get("UnprocessedKeys") or {})
        return found

    @staticmethod
    def sums(calls: Sequence[ServingCall]) -> dict[str, tuple[int, int]]:
        """(microseconds, images) per shape. A call stopped at a step counts as the whole
        call its steps extrapolate to: a hold sized on a stale figure is how an endpoint
        learns it is slower than it thought (a call stopped before any step says nothing)."""
        sums: dict[str, tuple[int, int]] = {}
        for call in calls:
            seconds = call.seconds
            if call.interrupted:
                if not call.steps_done:
                    continue
                seconds = seconds * call.steps / call.steps_done
            if call.images == 0:
                continue
            seconds_us, images = sums.get(call.key, (0, 0))
            sums[call.key] = (seconds_us + round(seconds * 1_000_000), images + call.images)
        return sums

    def add(self, endpoint: str, model: str, sums: Mapping[str, tuple[int, int]]) -> None:
        """ADD each shape's (microseconds, images), once however often botocore resends."""
        updates: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item({"pk": endpoint_pk(endpoint), "sk": throughput_sk(model, key)}),
                    "UpdateExpression": "ADD seconds_us :s, images :n SET shape = :k, "
                    "model = :m, updated_at = :t",
                    "ExpressionAttributeValues": to_item(
                        {":s": seconds_us, ":n": images, ":k": key, ":m": model, ":t": now_iso()}
                    ),
                }
            }
            for key, (seconds_us, images) in sorted(sums.items())
        ]
        for start in range(0, len(updates), _TRANSACTION_LIMIT):
            part = updates[start : start + _TRANSACTION_LIMIT]
            self.meter.add(ddb_write_units=THROUGHPUT_WRITE_UNITS * len(part))
            self._ddb.transact_write_items(TransactItems=part)
