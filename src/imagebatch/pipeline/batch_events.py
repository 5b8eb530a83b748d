"""Word when a batch ends: a "Batch Finished" event on the account's default EventBridge bus.

Finalize runs this as a hook once the batch is settled, so the event carries the final
status, counts and money (one vocabulary: costs/terms.py). A rule on the default bus with
{"source": ["imagebatch"], "detail-type": ["Batch Finished"]} sends it anywhere (README).
Publishing is best effort: a failed PutEvents is logged and never fails finalize, whose
retry would settle the batch twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from imagebatch.aws.s3_store import report_key
from imagebatch.errors import StorageError

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


def finished_detail(batch_id: str, summary: Mapping[str, Any], bucket: str) -> BatchFinishedDetail:
    """The detail of a settled batch summary (finalize stores its categories under `costs`)."""
    costs = summary.get("costs") or {}
    inference = int(costs.get("inference", summary.get("cost_micro_usd", 0)))
    budget = summary.get("max_cost_micro_usd")
    return BatchFinishedDetail(
        batch_id=batch_id,
        status=str(summary.get("status")),
        images=FinishedImages(
            total=int(summary.get("images_total", 0)),
            succeeded=int(summary.get("images_succeeded", 0)),
            failed=int(summary.get("images_failed", 0)),
        ),
        failures_by_class={k: int(v) for k, v in (summary.get("failures_by_class") or {}).items()},
        cost_micro_usd=FinishedCost(
            inference=inference,
            orchestration=int(costs.get("orchestration", 0)),
            storage=int(costs.get("storage", 0)),
            total=int(costs.get("total", inference)),
            charged=int(summary.get("spent_micro_usd", 0)),
            estimate=int(summary.get("estimate_micro_usd", 0)),
            budget=int(budget) if budget is not None else None,
        ),
        tags=dict(summary.get("tags") or {}),
        finished_at=summary.get("finished_at"),
        summary_report=f"s3://{bucket}/{report_key(batch_id, 'summary.json')}",
    )


class BatchFinishedNotifier:
    """A finalize hook (pipeline.finalize.BatchFinalizedHook) that publishes the event."""

    def __init__(self, events: EventPublisher, bucket: str) -> None:
        self._events = events
        self._bucket = bucket

    def __call__(self, batch_id: str, summary: Mapping[str, Any]) -> int:
        detail = finished_detail(batch_id, summary, self._bucket)
        try:
            event_id = self._events.put(DETAIL_TYPE, detail.model_dump_json())
        except StorageError as exc:
            logger.warning("batch finished event not published", extra={"reason": str(exc)})
            return 0
        logger.info("batch finished event published", extra={"event_id": event_id})
        return 1
