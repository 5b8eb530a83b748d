"""The batch's end in the ledger: its final status and finalize's own charge in one
conditional update (a finalize run again neither charges nor settles twice), the chunks the
state machine marked failed, the finalize hooks that raised, and the roll-up of what the
batch was charged outside its chunk commits. Ledger inherits it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from imagebatch.aws.batch_items import record_from_item
from imagebatch.aws.dynamo_items import (
    SUMMARY_SK,
    batch_pk,
    now_iso,
    reported_write_units,
    rollup_action,
    rollup_sk,
    to_item,
)
from imagebatch.aws.ledger_holds import BudgetHolds
from imagebatch.costs.settlement import model_charge_adds
from imagebatch.costs.usage import rollup_write_units, tags_bytes
from imagebatch.errors import StorageError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus

# A batch in one of these was settled by finalize (or rejected at ingest): never again.
_FINAL = (BatchStatus.SUCCEEDED, BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.REJECTED)
_FINAL_VALUES = {f":final{i}": s.value for i, s in enumerate(_FINAL)}
_FINAL_LIST = ", ".join(_FINAL_VALUES)
# Reads of the rollups before a roll-up gives up: each retry follows another writer's
# update of today's rollup (a concurrent finalize run, a late result), never a fault.
ROLLUP_ATTEMPTS = 5


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

    def record_hook_done(self, batch_id: str, name: str) -> None:
        """A finalize hook that ran, on the batch record (hooks_done). A resend whose reply
        was lost appends the name twice: what is read is membership, never a count."""
        self.metered_summary_update(
            batch_id,
            TableName=self.table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": SUMMARY_SK}),
            UpdateExpression="SET #h = list_append(if_not_exists(#h, :none), :name)",
            ExpressionAttributeNames={"#h": "hooks_done"},
            ExpressionAttributeValues=to_item({":none": [], ":name": [name]}),
        )

    def roll_up_remainder(self, batch_id: str, summary: BatchRecord) -> int:
        """Add what the batch was charged outside chunk commits (ingest, finalize, written-off
        holds) to today's cost rollup, so cost over a time range sums to the batches' spend.

        Once only: the update is conditioned on today's rollup holding what was read. A
        resend of an update whose reply was lost (botocore's retry) is refused by the
        change it made itself, as is a concurrent finalize run's; either way the rollups are
        read again and only what is still missing is added (the chaos e2e's seed 42
        counted a lost reply's ADD twice)."""
        for _ in range(ROLLUP_ATTEMPTS):
            rollups = list(self.query_batch(batch_id, "DAY#"))
            remainder = summary.spent_micro_usd - sum(
                int(r.get("spent_micro_usd", 0)) for r in rollups
            )
            if remainder <= 0:
                return 0
            day = now_iso()[:10]
            today = [r for r in rollups if r["sk"] == rollup_sk(day)]
            model = (summary.models or ["(none)"])[0]
            update: dict[str, Any] = rollup_action(
                self.table,
                day,
                model_charge_adds(model, remainder),
                batch_id=batch_id,
                backend=summary.backend,
                tags=summary.tags,
            )["Update"]  # type: ignore[assignment]
            if today and "spent_micro_usd" in today[0]:
                update["ConditionExpression"] = "spent_micro_usd = :seen"
                seen = to_item({":seen": int(today[0]["spent_micro_usd"])})
                update["ExpressionAttributeValues"].update(seen)
            else:
                update["ConditionExpression"] = "attribute_not_exists(spent_micro_usd)"
            units = rollup_write_units(tags_bytes(summary.tags), transactional=False)
            try:
                response = self._ddb.update_item(**update, ReturnConsumedCapacity="INDEXES")
            except ClientError as exc:
                self.meter.add(ddb_write_units=units)  # a refused conditional write is billed
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue  # the rollup moved (this update's own resend, or another writer)
            self.meter.add(
                ddb_write_units=max(units, reported_write_units(response.get("ConsumedCapacity")))
            )
            return remainder
        raise StorageError(f"roll-up of {batch_id}: today's rollup kept moving", transient=True)
