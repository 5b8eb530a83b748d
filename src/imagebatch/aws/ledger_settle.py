"""The batch's end in the ledger: its final status and finalize's own charge in one
conditional update (a finalize run again neither charges nor settles twice), the chunks the
state machine marked failed, and the finalize hooks that raised. Ledger inherits it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from imagebatch.aws.batch_items import record_from_item
from imagebatch.aws.dynamo_items import SUMMARY_SK, batch_pk, now_iso, to_item
from imagebatch.aws.ledger_holds import BudgetHolds
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus

# A batch in one of these was settled by finalize (or rejected at ingest): never again.
_FINAL = (BatchStatus.SUCCEEDED, BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.REJECTED)
_FINAL_VALUES = {f":final{i}": s.value for i, s in enumerate(_FINAL)}
_FINAL_LIST = ", ".join(_FINAL_VALUES)


class BatchSettlement(BudgetHolds):
    def failed_chunks(self, batch_id: str) -> dict[str, dict[str, Any]]:
        return {
            record["sk"].removeprefix("CHUNK#"): record
            for record in self.query_batch(batch_id, "CHUNK#")
            if record.get("status") == "FAILED"
        }

    def start_finalizing(self, batch_id: str) -> int | None:
        """Raise the fence and claim a finalize generation: finalizing_at is set once (the
        first run's time) and refuses every later chunk commit (Settlement.fenced);
        finalize_generation counts the runs, and this run's number is returned. None when
        the batch is final already (another run settled it)."""
        self.meter.add(ddb_write_units=self.summary_write_units(batch_id, transactional=False))
        try:
            response = self._ddb.update_item(
                TableName=self.table,
                Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
                UpdateExpression="SET finalizing_at = if_not_exists(finalizing_at, :at) "
                "ADD finalize_generation :one",
                ConditionExpression=f"attribute_exists(pk) AND NOT (#st IN ({_FINAL_LIST}))",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=to_item({":at": now_iso(), ":one": 1} | _FINAL_VALUES),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            if self._get(batch_pk(batch_id), SUMMARY_SK) is None:
                raise  # no such batch
            return None
        return int(response["Attributes"]["finalize_generation"]["N"])

    def settle_batch(
        self,
        batch_id: str,
        status: BatchStatus,
        extra: Mapping[str, Any],
        adds: Mapping[str, int] | None = None,
        *,
        generation: int | None = None,
    ) -> BatchRecord | None:
        """Set the final status; `adds` are counters ADDed in the same update (finalize's own
        operations, charged to the batch). None when the batch is already final: finalize
        run again (a retry after its reply was lost) neither charges nor settles twice; or,
        with `generation` (start_finalizing's), when a later finalize run has started: that
        run settles, with its own reports."""
        fields = {"status": status.value, "finished_at": now_iso(), **extra}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        plain_values: dict[str, Any] = {f":v{i}": value for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        if adds:
            names.update({f"#a{i}": name for i, name in enumerate(adds)})
            plain_values.update({f":a{i}": value for i, value in enumerate(adds.values())})
            expression += " ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(adds)))
        names["#st"] = "status"
        plain_values.update({f":final{i}": s.value for i, s in enumerate(_FINAL)})
        final = ", ".join(f":final{i}" for i in range(len(_FINAL)))
        condition = f"attribute_exists(pk) AND NOT (#st IN ({final}))"
        if generation is not None:
            condition += " AND finalize_generation = :generation"
            plain_values[":generation"] = generation
        try:
            response = self.metered_summary_update(
                batch_id,
                TableName=self.table,
                Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(plain_values),
                ConditionExpression=condition,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            if self._get(batch_pk(batch_id), SUMMARY_SK) is None:
                raise  # no such batch: settling must not create it, nor pass for done
            return None
        return record_from_item(response["Attributes"])

    def record_hook_failures(self, batch_id: str, lines: Sequence[str]) -> None:
        """Finalize hooks that failed, on the batch record (appended: a later run's add)."""
        self.metered_summary_update(
            batch_id,
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            UpdateExpression="SET #h = list_append(if_not_exists(#h, :none), :lines)",
            ExpressionAttributeNames={"#h": "hook_failures"},
            ExpressionAttributeValues=to_item({":none": [], ":lines": list(lines)}),
        )
