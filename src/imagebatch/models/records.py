"""What moves between the pipeline's steps: chunk files, image outcomes, batch records."""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FailureClass(StrEnum):
    THROTTLED = "throttled"
    CONTENT_FILTERED = "content_filtered"
    INVALID = "invalid"
    MODEL_ERROR = "model_error"
    TIMEOUT = "timeout"
    # The batch's max_cost_usd could not cover the chunk: it never ran, nothing was spent.
    BUDGET_EXHAUSTED = "budget_exhausted"
    # Our own storage failed (an S3 PUT of the PNG, or the ledger): the image may have been
    # made and paid for; the class says it was not the model.
    STORAGE_ERROR = "storage_error"


class BatchStatus(StrEnum):
    REJECTED = "REJECTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"


class ImageJob(BaseModel):
    """One image to make: a manifest item expanded by its `count`."""

    model_config = ConfigDict(frozen=True)
    image_id: str
    item_id: str
    index: int = Field(ge=1)
    line: int
    prompt: str
    negative_prompt: str | None = None
    width: int
    height: int
    seed: int
    steps: int | None = None
    guidance: float | None = None
    model: str
    tags: dict[str, str] = Field(default_factory=dict)
    # False: make this image even when one with its identity exists (`reuse: false` in the
    # manifest's header or on its item); docs/reuse.md.
    reuse: bool = True

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()


class ChunkFile(BaseModel):
    """chunks/<batch-id>/<chunk-id>.json: the unit one chunk invocation works on."""

    batch_id: str
    chunk_id: str
    backend: Literal["bedrock", "sagemaker"]
    output_prefix: str
    images: list[ImageJob]
    # Batch tags, for the cost rollups (images carry batch and item tags merged).
    tags: dict[str, str] = Field(default_factory=dict)


class ChunkRef(BaseModel):
    """One entry of chunks/<batch-id>/index.json, the Distributed Map's item list."""

    chunk_id: str
    key: str
    images: int
    # The Map's Choice state routes each chunk by it (a batch may use both backends).
    backend: Literal["bedrock", "sagemaker"] = "bedrock"


class ChunkTask(BaseModel):
    """The Map's per-chunk input (ItemSelector in statemachine/batch.asl.json)."""

    batch_id: str
    bucket: str
    chunk: ChunkRef
    # Bedrock calls in flight for this chunk, derived by ingest from the model's quota.
    chunk_concurrency: int | None = Field(default=None, ge=1)
    # Step Functions' $$.State.RetryCount (the SageMaker path names its attempts by it). The
    # Bedrock path does not rely on it: a redriven execution counts from 0 again, so every
    # attempt looks for PNGs an earlier one stored but never committed (pipeline.stored_images).
    retry_count: int = Field(default=0, ge=0)


class ImageRecord(BaseModel):
    """One image's ledger record as a reader of the ledger sees it (the query API's items)."""

    image_id: str
    item_id: str
    chunk_id: str
    status: Literal["SUCCEEDED", "FAILED"]
    model: str
    backend: str
    seed: int
    # Never negative: a record read back (a pending file, a stored PNG's evidence) with a
    # negative cost would credit the batch.
    cost_micro_usd: int = Field(default=0, ge=0)
    output_key: str | None = None
    failure_class: FailureClass | None = None
    failure_reason: str | None = None
    # A reused image: copied from this batch's image of the same identity, not made.
    reused_from_batch_id: str | None = None
    reused_from_image_id: str | None = None


class ImageOutcome(ImageRecord):
    """What happened to one image; becomes its ledger record.

    The fields added here are the pipeline's own bookkeeping, recorded but not published.
    """

    prompt_sha256: str
    price_source: str | None = None
    # Self-hosted backends: the image's share of its pipeline call, what its cost is priced on.
    inference_ms: int | None = Field(default=None, ge=0)
    # What decides the pixels (models.identity); a made image is indexed under it.
    identity_sha256: str | None = None
    # A reused image: the inference it did not buy (its own cost_micro_usd is 0).
    reuse_saved_micro_usd: int | None = Field(default=None, ge=0)

    @property
    def reused(self) -> bool:
        return self.reused_from_batch_id is not None

    @classmethod
    def failed(
        cls,
        job: ImageJob,
        *,
        chunk_id: str,
        backend: str,
        failure_class: FailureClass,
        reason: str,
    ) -> ImageOutcome:
        """An image that was not made: recorded with its class and reason, charged nothing."""
        return cls(
            image_id=job.image_id,
            item_id=job.item_id,
            chunk_id=chunk_id,
            status="FAILED",
            model=job.model,
            backend=backend,
            seed=job.seed,
            prompt_sha256=job.prompt_sha256,
            failure_class=failure_class,
            failure_reason=reason[:1000],
        )


class ChunkResult(BaseModel):
    chunk_id: str
    succeeded: int
    failed: int
    cost_micro_usd: int
    skipped_already_done: int = 0
    # Bedrock throttles the chunk met (each retried; the BedrockThrottles metric)
    throttles: int = 0

    @classmethod
    def of(
        cls, chunk_id: str, outcomes: list[ImageOutcome], *, skipped: int = 0, throttles: int = 0
    ) -> ChunkResult:
        """The totals of what one attempt committed."""
        return cls(
            chunk_id=chunk_id,
            succeeded=sum(1 for o in outcomes if o.status == "SUCCEEDED"),
            failed=sum(1 for o in outcomes if o.status == "FAILED"),
            cost_micro_usd=sum(o.cost_micro_usd for o in outcomes),
            skipped_already_done=skipped,
            throttles=throttles,
        )

    @classmethod
    def already_done(cls, chunk_id: str, images: int) -> ChunkResult:
        """A chunk whose every image a previous attempt recorded: nothing made or charged."""
        return cls(
            chunk_id=chunk_id, succeeded=0, failed=0, cost_micro_usd=0, skipped_already_done=images
        )


_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def batch_id_for(bucket: str, key: str, content_sha256: str) -> str:
    """Same content at the same key -> same id, so a re-delivered event, or the same bytes
    uploaded again by any tool, never starts twice. `content_sha256`: the hex SHA-256 of the
    manifest's bytes (not the ETag: a multipart or SSE-KMS upload's ETag is not the content's).

    Also a valid Step Functions execution name (<= 80 chars of [A-Za-z0-9-_]).
    """
    digest = hashlib.sha256(f"{bucket}/{key}/{content_sha256}".encode()).hexdigest()[:16]
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    readable = _UNSAFE.sub("-", stem).strip("-")[:40] or "batch"
    return f"{readable}-{digest}"


class MadeImage(BaseModel):
    """An identity's entry in the image index: where an image of that identity was made."""

    model_config = ConfigDict(frozen=True)
    identity_sha256: str
    batch_id: str
    image_id: str
    output_key: str


def image_metadata(batch_id: str, job: ImageJob, seed: int) -> dict[str, str]:
    """S3 object metadata of a PNG, the same on every backend."""
    return {
        "batch-id": batch_id,
        "item-id": job.item_id,
        "model": job.model,
        "seed": str(seed),
        "prompt-sha256": job.prompt_sha256,
    }


def record_evidence(
    image_id: str, chunk_id: str, cost_micro_usd: int, hold_id: str | None = None
) -> dict[str, str]:
    """Metadata a Bedrock PNG carries besides image_metadata's: with the chunk file, what its
    image record needs, so a PNG whose attempt died before its commit is recorded from it,
    and the budget hold of the attempt that stored it (`hold-id`), which that record settles."""
    evidence = {"image-id": image_id, "chunk-id": chunk_id, "cost-micro-usd": str(cost_micro_usd)}
    if hold_id is not None:
        evidence["hold-id"] = hold_id
    return evidence


def reuse_evidence(
    source_batch_id: str, source_image_id: str, saved_micro_usd: int
) -> dict[str, str]:
    """Metadata a reused copy carries besides record_evidence's (whose cost is 0): what it
    was copied from, so a copy whose attempt died before its commit is recorded as reused,
    not as an image the backend made for the batch."""
    return {
        "reused-from-batch": source_batch_id,
        "reused-from-image": source_image_id,
        "reuse-saved-micro-usd": str(saved_micro_usd),
    }


def hashed_seed(*parts: str, maximum: int) -> int:
    """A seed in [1, maximum] that depends only on `parts`: the same image (or product) gets
    the same seed on every run, retry and redrive."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % maximum
