"""Finalize's hooks (what a finished batch sets off: Batch Finished, the catalog's latest
images), each run once its batch is settled, and each recorded on the batch as it returns
(hooks_done), so a finalize run again after the settle (stopped at its timeout, or its
settle's reply lost) runs exactly those that did not run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aws_lambda_powertools import Logger

from imagebatch.aws.ledger import Ledger
from imagebatch.models.batch_record import BatchRecord

logger = Logger(child=True)


class BatchFinalizedHook(Protocol):
    """Called once the batch is settled, with its final summary record; returns what it did
    (for the log). A hook that raises is logged and recorded on the batch (hook_failures);
    finalize goes on with the next one and succeeds."""

    def __call__(self, batch_id: str, summary: BatchRecord) -> int: ...


def hook_name(hook: BatchFinalizedHook) -> str:
    return type(hook).__name__


def after_settle(
    hooks: Sequence[BatchFinalizedHook], batch_id: str, settled: BatchRecord, ledger: Ledger
) -> None:
    """What a settled batch does once, whichever finalize run gets there: give back a wake
    no window will charge (the endpoint served none of its requests: all reused, all on
    Bedrock; a served batch's wake waits for its window's charge), then run the hooks."""
    if settled.wake_held_micro_usd and not settled.endpoint_requests:
        ledger.release_unserved_wake(batch_id, settled.wake_held_micro_usd)
    run_missing_hooks(hooks, batch_id, settled, ledger)


def run_missing_hooks(
    hooks: Sequence[BatchFinalizedHook], batch_id: str, settled: BatchRecord, ledger: Ledger
) -> None:
    """Run the hooks the settled batch does not record as done. A batch settled before
    hooks were recorded (hooks_done None) runs none: whether they ran is unknown, and
    Batch Finished twice is worse than a retry that adds nothing. Two runs at once may
    both run a hook: hooks are at least once, as an EventBridge target is."""
    if settled.hooks_done is None:
        return
    missing = [h for h in hooks if hook_name(h) not in settled.hooks_done]
    failed = _run_hooks(missing, batch_id, settled, ledger)
    if failed:
        ledger.record_hook_failures(batch_id, failed)


def _run_hooks(
    hooks: Sequence[BatchFinalizedHook], batch_id: str, settled: BatchRecord, ledger: Ledger
) -> list[str]:
    """Each hook on its own: one that fails (a catalog gone, EventBridge refusing) is logged
    and returned as a line for the batch record; the batch is settled already, so failing
    the execution for it would only lose the contact sheet and the later hooks."""
    failed: list[str] = []
    for hook in hooks:
        name = hook_name(hook)
        try:
            done = hook(batch_id, settled)
        except Exception as exc:  # any hook error is recorded, never raised
            logger.exception("finalize hook failed", extra={"hook": name})
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        ledger.record_hook_done(batch_id, name)
        logger.info("finalize hook ran", extra={"hook": name, "result": done})
    return failed
