"""`imagebatch redrive-ingest --stack NAME` (or `--stack local`): replay each upload whose
ingest failed every attempt.

Lambda sends such an event, in its invocation record, to IngestFailureQueue (template.yaml's
EventInvokeConfig OnFailure; the local AWS does the same). Each message's requestPayload (the
original S3 event) is run through ingest synchronously; the message is deleted only once
ingest returned. The first replay that fails stops the redrive, its message and the rest left
on the queue (visible again) with the error printed: the cause is usually common to all, so
fix it and run again. Replaying is safe: ingest is idempotent by content hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagebatch.models.invocation_record import FailedIngest
from imagebatch_cli.deployed_stack import StackOption
from imagebatch_cli.exit_codes import fail
from imagebatch_cli.views.console import say


class FailedIngestQueue(Protocol):
    """aws.ingest_failures.IngestFailureQueue, as the redrive uses it."""

    def receive(self) -> list[FailedIngest]: ...

    def delete(self, failed: FailedIngest) -> None: ...

    def release(self, failed: FailedIngest) -> None: ...


class IngestReplayer(Protocol):
    """aws.ingest_failures.IngestInvoker: None when ingest accepted the event, else why not."""

    def invoke(self, event: Any) -> str | None: ...


@dataclass
class IngestRedrive:
    redriven: int = 0
    #: what was left on the queue, one line each: where it came from and why
    kept: list[str] = field(default_factory=list)


def redrive_failed_ingests(
    queue: FailedIngestQueue,
    invoker: IngestReplayer,
    on_redriven: Callable[[FailedIngest], None] | None = None,
) -> IngestRedrive:
    """Replay the queue's events until it is empty or one fails (see the module)."""
    done = IngestRedrive()
    while received := queue.receive():
        for position, failed in enumerate(received):
            error = (
                invoker.invoke(failed.record.request_payload)
                if failed.record is not None
                else f"not a Lambda invocation record: {failed.body[:200]}"
            )
            if error is not None:
                where = ", ".join(failed.record.s3_objects()) if failed.record else "?"
                done.kept.append(f"{failed.message_id} ({where or 'no S3 object'}): {error}")
                for left in received[position:]:
                    queue.release(left)
                return done
            queue.delete(failed)
            done.redriven += 1
            if on_redriven is not None:
                on_redriven(failed)
    return done


def redrive_ingest(stack: StackOption = None) -> None:
    """Replay the uploads whose ingest failed every attempt (IngestFailureQueue), each through
    ingest once more; a message is deleted only when ingest accepted its event."""
    from imagebatch.aws.ingest_failures import IngestFailureQueue, IngestInvoker
    from imagebatch_cli.deployed_stack import deployed_stack

    deployed = deployed_stack(stack)
    outputs = deployed.outputs
    if not outputs.ingest_failure_queue_url or not outputs.ingest_function_name:
        fail(
            f"stack {outputs.stack_name!r} has no IngestFailureQueueUrl or IngestFunctionName "
            "output: update it with this template (sam deploy)"
        )
    queue = IngestFailureQueue(deployed.session.sqs(), outputs.ingest_failure_queue_url)
    invoker = IngestInvoker(deployed.session.lambda_invoker(), outputs.ingest_function_name)

    def said(failed: FailedIngest) -> None:
        where = ", ".join(failed.record.s3_objects()) if failed.record else failed.message_id
        say(f"ingested again: {where}")

    done = redrive_failed_ingests(queue, invoker, said)
    say(f"{done.redriven} failed ingest(s) redriven")
    if done.kept:
        fail(f"left on the queue: {'; '.join(done.kept)}")
