"""Word when a batch ends: a "Batch Finished" event on the stack's own EventBridge bus.

Finalize runs this as a hook once the batch is settled, so the event carries the final
status, counts and money (one vocabulary: costs/terms.py). A rule on that bus (the stack
output BatchEventBusName; only the finalize role may publish there) with
{"source": ["imagebatch"], "detail-type": ["Batch Finished"]} sends it anywhere (README).
Publishing is best effort: a failed PutEvents is logged and never fails finalize, whose
retry would settle the batch twice. It is at least once (finalize_hooks.run_missing_hooks):
a consumer dedupes on `detail.batch_id`, the one id stable across publications (a batch is
settled once; EventBridge gives each PutEvents a new event id).
"""

from __future__ import annotations

from typing import Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.s3_store import report_key
from imagebatch.errors import StorageError
from imagebatch.models.batch_record import BatchRecord

logger = Logger(child=True)

DETAIL_TYPE = "Batch Finished"


class EventPublisher(Protocol):
    def put(self, detail_type: str, detail_json: str) -> str: ...


class FinishedImages(BaseModel):
    total: int
    succeeded: int
    failed: int


class FinishedCost(BaseModel):
    """Micro-dollars: the categories, their total, what the budget was charged, the estimate
    before the run and the budget (None: the manifest set no max_cost_usd)."""

    inference: int
    orchestration: int
    storage: int
    total: int
    charged: int
    estimate: int
    budget: int | None


class BatchFinishedDetail(BaseModel):
    """The event's `detail`."""

    batch_id: str
    status: str
    images: FinishedImages
    failures_by_class: dict[str, int]
    cost_micro_usd: FinishedCost
    tags: dict[str, str]
    finished_at: str | None
    summary_report: str  # s3://<bucket>/reports/<batch-id>/summary.json


def finished_detail(batch_id: str, summary: BatchRecord, bucket: str) -> BatchFinishedDetail:
    """The detail of a settled batch summary (finalize stores its categories under `costs`)."""
    costs = summary.costs or {}
    inference = int(costs.get("inference", summary.cost_micro_usd))
    return BatchFinishedDetail(
        batch_id=batch_id,
        status=str(summary.status),
        images=FinishedImages(
            total=summary.images_total,
            succeeded=summary.images_succeeded,
            failed=summary.images_failed,
        ),
        failures_by_class=dict(summary.failures_by_class or {}),
        cost_micro_usd=FinishedCost(
            inference=inference,
            orchestration=int(costs.get("orchestration", 0)),
            storage=int(costs.get("storage", 0)),
            total=int(costs.get("total", inference)),
            charged=summary.spent_micro_usd,
            estimate=summary.estimate_total_micro_usd or 0,
            budget=summary.max_cost_micro_usd,
        ),
        tags=dict(summary.tags or {}),
        finished_at=summary.finished_at,
        summary_report=f"s3://{bucket}/{report_key(batch_id, 'summary.json')}",
    )


class BatchFinishedNotifier:
    """A finalize hook (pipeline.finalize_hooks.BatchFinalizedHook) that publishes the event."""

    def __init__(self, events: EventPublisher, bucket: str) -> None:
        self._events = events
        self._bucket = bucket

    def __call__(self, batch_id: str, summary: BatchRecord) -> int:
        detail = finished_detail(batch_id, summary, self._bucket)
        try:
            event_id = self._events.put(DETAIL_TYPE, detail.model_dump_json())
        except StorageError as exc:
            logger.warning("batch finished event not published", extra={"reason": str(exc)})
            return 0
        logger.info("batch finished event published", extra={"event_id": event_id})
        return 1
