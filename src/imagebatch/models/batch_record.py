"""The batch summary: the one record of a batch, as the ledger writes and returns it.

Every attribute of the ledger's SUMMARY item is a field here (aws.batch_items translates
to and from the DynamoDB item; nothing else reads the summary by attribute name). Field
names say one thing each: `estimate_total_micro_usd` is every category of the estimate,
`estimate_inference_micro_usd` inference alone. Where the Python name differs from the
stored attribute, the alias is the attribute, so the items do not change.

Counters default to 0 and optional attributes to None because a summary only holds what
its batch has come to: a rejected batch never gets chunk counters, an uncapped one no
budget fields.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from imagebatch.models.records import BatchStatus


class SavedSheetPosition(BaseModel):
    """Where an execution's contact sheet goes on (written by the contact sheet Lambda for
    the invocation Step Functions retries it with)."""

    execution: str | None = None
    page: int = 1
    after_image_id: str | None = None


class BatchRecord(BaseModel):
    """One batch's SUMMARY item. Money is integer micro-dollars."""

    # Unknown attributes are kept, not dropped: a record read and written back (or compared
    # with its item) must not lose an attribute a newer writer added.
    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True)

    batch_id: str
    # Set by the ledger when it creates the record (the empty string never reaches it).
    created_at: str = ""
    status: BatchStatus | None = None
    finished_at: str | None = None
    rejection: str | None = None

    # what the upload was
    manifest_bucket: str | None = None
    manifest_key: str | None = None
    manifest_etag: str | None = None
    # the content ingest read (its SHA-256 names the batch) and the S3 version it read
    manifest_sha256: str | None = None
    manifest_version_id: str | None = None
    settings: str | None = None  # the manifest's BatchSettings as JSON
    output_prefix: str | None = None
    on_invalid: str | None = None
    tags: dict[str, str] | None = None

    # the plan
    backend: str | None = None
    backends: dict[str, int] | None = None  # images per backend
    backend_choice: str | None = None
    models: list[str] | None = None
    items_valid: int | None = None
    invalid_lines: int | None = None
    images_total: int = 0
    chunks_total: int | None = None
    in_flight: int | None = None
    map_max_concurrency: int | None = None
    chunk_concurrency: int | None = None
    errors_key: str | None = None

    # the estimate
    estimate_total_micro_usd: int | None = Field(default=None, alias="estimate_micro_usd")
    estimate_inference_micro_usd: int | None = None
    estimate_orchestration_micro_usd: int | None = None
    estimate_storage_micro_usd: int | None = None
    # the images ingest found already made (the image index) and left out of the estimate,
    # and their inference; None: ingest did not look (ReuseImages off)
    estimate_images_reused: int | None = None
    estimate_reuse_saved_micro_usd: int | None = None

    # progress, ADDed once per chunk commit
    images_succeeded: int = 0
    images_failed: int = 0
    chunk_commits: int = 0
    # reuse (pipeline.reuse): images copied from an earlier batch, and what making them
    # would have cost
    images_reused: int = 0
    reuse_saved_micro_usd: int = 0

    # money: inference the image records carry, what the batch was charged, its budget
    cost_micro_usd: int = 0
    rework_micro_usd: int = 0
    # Bedrock calls whose reply was lost (maybe billed), charged within rework_micro_usd
    unconfirmed_calls: int = 0
    spent_micro_usd: int = 0
    endpoint_overhead_micro_usd: int = 0
    max_cost_micro_usd: int | None = None
    reserved_micro_usd: int = 0
    budget_left_micro_usd: int = 0
    overhead_reserve_micro_usd: int = 0
    unsettled_micro_usd: int = 0
    # charged past the hold it settled (costs.budget.over_hold): spent beyond what the cap
    # was checked against, shown as over cap in every report
    over_cap_micro_usd: int = 0
    # the endpoint's wake (cold start + idle tail) ingest counted at admission, and what of it
    # is still held (part of reserved) until the endpoint observer charges the window
    endpoint_wake_micro_usd: int = 0
    wake_held_micro_usd: int = 0
    # requests the endpoint served for the batch (ADDed by each commit that records one):
    # while 0, no window can charge the batch, so finalize releases its wake
    endpoint_requests: int = 0

    # counted operations (costs.usage.Usage, under use_<name>)
    use_sfn_transitions: int = 0
    use_lambda_requests: int = 0
    use_lambda_mb_ms: int = 0
    use_ddb_write_units: int = 0
    use_ddb_read_units: int = 0
    use_s3_put_requests: int = 0
    use_s3_get_requests: int = 0
    use_s3_bytes_written: int = 0
    use_sqs_requests: int = 0
    use_sns_publishes: int = 0

    # the end, written by finalize and the contact sheet
    # when finalize first started (the fence: a chunk commit after it is refused) and how
    # many finalize runs started (each run's reports and settle carry its own number)
    finalizing_at: str | None = None
    finalize_generation: int = 0
    report_key: str | None = None
    # finalize's hooks that raised (each "Hook: Error: message"), appended by every run
    hook_failures: list[str] | None = None
    # finalize's hooks that ran (their class names), appended as each returns; [] from the
    # settle on, so a run again after the settle runs those missing (None: settled before
    # hooks were recorded, nothing known to run again)
    hooks_done: list[str] | None = None
    # set by the state machine's SettleWithError when finalize failed after its retries
    finalize_error: str | None = None
    finalize_error_detail: str | None = None
    redrive_key: str | None = None
    failures_by_class: dict[str, int] | None = None
    costs: dict[str, int] | None = None  # categories and total, rounded, at finalize
    contact_sheet_position: SavedSheetPosition | None = None

    @property
    def capped(self) -> bool:
        """Whether the batch has a budget (max_cost_usd)."""
        return self.max_cost_micro_usd is not None
