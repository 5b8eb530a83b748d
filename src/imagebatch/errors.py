"""The domain's exceptions, in one place so callers know what each layer can raise.

    ImageBatchError
    ├── ManifestError              the manifest as a whole is unusable (header, columns, no items)
    ├── CatalogError               a catalog config is unusable as a whole
    ├── BatchNotFoundError         a batch id with no summary record in the ledger
    ├── UnknownModelError          a model id the Bedrock model catalogue does not list
    ├── ObjectMissingError         an S3 object the pipeline expected is not there
    ├── ForgedResultError          a SageMaker result that is not provably the endpoint's:
    │                              dropped, never recorded
    ├── ContactSheetOutOfBudgetError the contact sheet used the time its budget hold covers
    ├── ImagesAlreadyRecordedError a ledger commit raced another invocation; nothing written
    ├── BatchFinalizingError       a chunk commit came after finalize started; nothing written
    ├── StorageError               our own S3 or DynamoDB call failed after its retries
    ├── EndpointSubmitError        InvokeEndpointAsync failed; says whether it may have queued
    ├── RestartLimitError          a batch's execution was restarted too often to try again
    ├── InvalidTokenError          a pagination token the query API did not hand out
    ├── AwsAccessError             an AWS call a person made (the CLI) failed: no region or
    │                              credentials, endpoint unreachable, refused; worded to act on
    ├── StackOutputsError          a deployed stack lacks what the CLI needs (outputs, config)
    ├── ImageGenerationError       a backend did not make an image (with its failure class)
    │   ├── ModelAccessDenied      Bedrock refused the model (AccessDenied): waited out on
    │   │                          first use while AWS Marketplace subscribes the account
    │   └── UnconfirmedCall        a Bedrock call sent whose reply never came whole: it may
    │                              have been billed; charged as rework, not called again
    ├── ContactSheetUnfinished     the contact sheet ran out of invocation time; retried
    ├── EndpointResultsPending     finalize found endpoint requests that may still answer;
    │                              retried until they do or can no longer
    └── ChunkUnfinished            some images of a chunk were not made; Step Functions retries

Raise them `from` the cause, so the log keeps what AWS or the model actually said.
"""

from __future__ import annotations

import json

from imagebatch.models.records import FailureClass


class ImageBatchError(Exception):
    """Base of every error the domain raises on purpose."""


class ManifestError(ImageBatchError):
    """The manifest as a whole cannot be used (bad header, unknown column, no items)."""

    def __init__(self, reason: str, *, line: int | None = None, field: str | None = None):
        self.reason = reason
        self.line = line
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class CatalogError(ImageBatchError):
    """The catalog config is unusable as a whole (not one product's problem)."""


class BatchNotFoundError(ImageBatchError):
    """The ledger has no summary record for this batch id."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch {batch_id} has no summary record")
        self.batch_id = batch_id


class UnknownModelError(ImageBatchError):
    """A model id the Bedrock model catalogue does not list."""


class ObjectMissingError(ImageBatchError):
    """An S3 object the pipeline expected is not there."""


class ForgedResultError(ImageBatchError):
    """A SageMaker result notification RecordResult cannot trust (not an SNS envelope from
    its topics, locations outside its prefixes, an inference id that is not its request's):
    logged and dropped with a metric, never recorded."""


class ContactSheetOutOfBudgetError(ImageBatchError):
    """The contact sheet used the time its budget hold covers; it stops (its cost so far is
    charged to the batch, and the batch's result stands)."""


class ImagesAlreadyRecordedError(ImageBatchError):
    """A commit raced another invocation of the same chunk; nothing was written.

    `settled_elsewhere`: the commit's request marker or budget hold said so (this result was
    recorded before, or its hold was settled or written off); otherwise an image record did.
    """

    def __init__(self, reason: str, *, settled_elsewhere: bool = False) -> None:
        super().__init__(reason)
        self.settled_elsewhere = settled_elsewhere


class BatchFinalizingError(ImageBatchError):
    """A chunk's commit (or attempt) came after finalize started on its batch (the summary's
    finalizing_at): refused, nothing written. Finalize accounts for the batch from here; the
    attempt's PNGs are evidence it may record, and what it bought is charged as rework."""


class StorageError(ImageBatchError):
    """An S3 or DynamoDB call of ours failed after the adapter's own retries. `transient`:
    the same call may succeed later (throttling, a transaction conflict, a 5xx)."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class EndpointSubmitError(ImageBatchError):
    """InvokeEndpointAsync failed after botocore's retries. `transient`: the same call may
    succeed later (a throttle, a 5xx, the network). `ambiguous`: no answer came back (a
    connection error or a timeout, on this or on an earlier of botocore's attempts), so the
    request may be queued on the endpoint all the same."""

    def __init__(self, reason: str, *, transient: bool, ambiguous: bool) -> None:
        super().__init__(reason)
        self.transient = transient
        self.ambiguous = ambiguous


class RestartLimitError(ImageBatchError):
    """A batch's execution ended unfinished too many times; a person should look first."""


class InvalidTokenError(ImageBatchError):
    """A pagination token this API did not hand out."""


class AwsAccessError(ImageBatchError):
    """An AWS call made for a person (the CLI) failed; the message says what to change."""


class StackOutputsError(ImageBatchError):
    """A deployed stack cannot be used: no such stack, or an output the CLI needs is absent."""


class ImageGenerationError(ImageBatchError):
    """An image the backend did not make, with its failure class."""

    def __init__(self, failure_class: FailureClass, reason: str, *, transient: bool) -> None:
        super().__init__(f"{failure_class.value}: {reason}")
        self.failure_class = failure_class
        self.reason = reason
        self.transient = transient


class ModelAccessDenied(ImageGenerationError):
    """Bedrock answered AccessDeniedException for a model.

    On a model's first use in an account Bedrock subscribes it through AWS Marketplace and
    answers AccessDenied for about two minutes meanwhile, so the retrying backend waits this
    out for a bounded window (backends.retry.AccessWait) before calling it permanent.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(FailureClass.MODEL_ERROR, reason, transient=False)


class UnconfirmedCall(ImageGenerationError):
    """A Bedrock call that was sent but whose reply never came whole (a read timeout, a
    connection closed mid-reply, a body cut short): Bedrock may have made and billed the
    image with nothing returned. The attempt charges it as rework (the image's price, which
    its hold covers) and does not call again for that image; the chunk's next attempt, under
    its own hold, makes it."""

    def __init__(self, reason: str) -> None:
        super().__init__(FailureClass.TIMEOUT, reason, transient=True)


class ContactSheetUnfinished(ImageBatchError):
    """The contact sheet ran out of invocation time between pages; it recorded where it
    stopped, and Step Functions retries it from there (the class name is the error name the
    state machine's Retry matches)."""


class EndpointResultsPending(ImageBatchError):
    """Finalize found endpoint requests of failed chunks that may still make images (queued,
    running, or answered with the notification not yet recorded): recording those images
    lost now would list made images for redrive. Step Functions runs finalize again later
    (the class name is the error name FinalizeBatch's Retry matches)."""


class ChunkUnfinished(ImageBatchError):
    """Some images were not made this time (throttled, out of time); Step Functions retries.

    The message is JSON {"unfinished": {image_id: failure_class}} so that, if the retries
    run out, finalize records each image with the class it last failed with.
    """

    def __init__(self, unfinished: dict[str, FailureClass]) -> None:
        super().__init__(json.dumps({"unfinished": {k: v.value for k, v in unfinished.items()}}))
        self.unfinished = unfinished
