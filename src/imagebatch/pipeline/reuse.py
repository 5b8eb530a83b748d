"""Reuse before work: a chunk's images whose identity some batch already made are copied into
this batch's outputs instead of made again (docs/reuse.md).

Two steps around the chunk's budget hold: `find_reusable` (one batched index read for the
chunk, one HeadObject per hit: a deleted source is a miss) before it, so the hold covers only
what is left to make; `copy_reused` (one CopyObject per image) after it, so nothing is spent
unheld. A reused image is charged no inference; its copy, lookup and index writes are counted
operations like a made image's PUT, charged in the chunk's commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from imagebatch.aws.ports import ChunkLedgerPort, ChunkStorePort
from imagebatch.aws.s3_store import image_key
from imagebatch.backends.bedrock import bedrock_identity
from imagebatch.costs.prices import RegionPrices
from imagebatch.costs.usage import Usage, price_usage
from imagebatch.errors import StorageError
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.money import ceil_micro
from imagebatch.models.records import (
    ChunkFile,
    ImageJob,
    ImageOutcome,
    MadeImage,
    image_metadata,
    record_evidence,
    reuse_evidence,
)

logger = Logger(child=True)


@dataclass(frozen=True)
class Reusable:
    """An image of the job's identity that still exists: where, and how big."""

    source: MadeImage
    size: int


def bedrock_identities(todo: list[ImageJob], catalogue: ModelCatalogue) -> dict[str, str]:
    """image id -> identity for the jobs that may be reused (a job with `reuse: false`, or
    of a model the catalogue does not know, is always made)."""
    identities: dict[str, str] = {}
    for job in todo:
        spec = catalogue.get(job.model)
        if job.reuse and spec is not None:
            identities[job.image_id] = bedrock_identity(job, spec)
    return identities


def find_reusable(
    identities: dict[str, str],
    *,
    store: ChunkStorePort,
    ledger: ChunkLedgerPort,
) -> dict[str, Reusable]:
    """image id -> a made image of its identity whose object still exists."""
    if not identities:
        return {}
    made = ledger.find_made_images(sorted(set(identities.values())))
    found: dict[str, Reusable] = {}
    for image_id, identity in identities.items():
        source = made.get(identity)
        if source is None:
            continue
        try:
            size = store.image_size(source.output_key)
        except StorageError as exc:
            # unsure whether it exists: make the image rather than copy a maybe-missing one
            logger.warning(
                "reuse source unreadable", extra={"key": source.output_key, "reason": exc.reason}
            )
            continue
        if size is not None:
            found[image_id] = Reusable(source=source, size=size)
    return found


def same_identity_followers(to_make: list[ImageJob], identities: dict[str, str]) -> dict[str, str]:
    """Images of the chunk with the same identity as an earlier one still to make: follower
    image id -> the image id it copies once that one is made (made once, not twice)."""
    leaders: dict[str, str] = {}
    followers: dict[str, str] = {}
    for job in to_make:
        identity = identities.get(job.image_id)
        if identity is None:
            continue
        leader = leaders.setdefault(identity, job.image_id)
        if leader != job.image_id:
            followers[job.image_id] = leader
    return followers


def reusable_from_made(
    followers: dict[str, str],
    made: list[ImageOutcome],
    batch_id: str,
    *,
    store: ChunkStorePort,
) -> dict[str, Reusable]:
    """follower image id -> the image this attempt just made of its identity. A follower
    whose image was not made (failed, out of time) or cannot be read is absent: the caller
    leaves it unfinished, and the chunk's retry makes it (its leader then recorded)."""
    by_id = {o.image_id: o for o in made if o.status == "SUCCEEDED" and o.output_key}
    sizes: dict[str, int | None] = {}
    found: dict[str, Reusable] = {}
    for follower, leader in followers.items():
        outcome = by_id.get(leader)
        if outcome is None or outcome.output_key is None or outcome.identity_sha256 is None:
            continue
        if leader not in sizes:
            try:
                sizes[leader] = store.image_size(outcome.output_key)
            except StorageError:
                sizes[leader] = None
        size = sizes[leader]
        if size is not None:
            source = MadeImage(
                identity_sha256=outcome.identity_sha256,
                batch_id=batch_id,
                image_id=leader,
                output_key=outcome.output_key,
            )
            found[follower] = Reusable(source=source, size=size)
    return found


def lookup_bound(candidates: int, images: int, prices: RegionPrices) -> int:
    """The most `find_reusable` and the index writes add to an attempt beyond what
    costs.estimate.chunk_reservation already bounds (micro-dollars, rounded up): the index
    read and a HeadObject per candidate (none when reuse is off), a transactional index
    entry per image (written whether or not reuse is on, so a later batch can find it)."""
    usage = Usage(
        ddb_read_units=candidates + 1 if candidates else 0,
        s3_get_requests=candidates,
        ddb_write_units=2 * images,
    )
    return ceil_micro(price_usage(usage, prices).total)


def copy_reused(
    todo: list[ImageJob],
    reusable: dict[str, Reusable],
    identities: dict[str, str],
    chunk: ChunkFile,
    *,
    store: ChunkStorePort,
    saved_micro_usd: Callable[[ImageJob], int],
    model: str | None = None,
    hold_id: str | None = None,
) -> list[ImageOutcome]:
    """Copy each reusable image to this batch's key for it. One whose copy fails is absent
    from the result: the caller leaves it unfinished for the chunk's retry, since the budget
    hold did not cover making it. `saved_micro_usd`: the inference the image would have cost
    on the chunk's backend; `model`: the model its record names (the job's when None);
    `hold_id`: the attempt's budget hold, named in the copy's evidence (stored_images.py)."""
    reused: list[ImageOutcome] = []
    for job in todo:
        hit = reusable.get(job.image_id)
        if hit is None:
            continue
        key = image_key(chunk.output_prefix, chunk.batch_id, job.image_id)
        try:
            store.copy_image(
                hit.source.output_key,
                key,
                hit.size,
                # the evidence finalize records a PNG from if this attempt dies before its
                # commit (stored_images.py): a copy costs no inference
                image_metadata(chunk.batch_id, job, job.seed)
                | record_evidence(job.image_id, chunk.chunk_id, 0, hold_id)
                | reuse_evidence(hit.source.batch_id, hit.source.image_id, saved_micro_usd(job)),
            )
        except StorageError as exc:
            logger.warning(
                "reuse copy failed", extra={"image_id": job.image_id, "reason": exc.reason}
            )
            continue
        reused.append(
            ImageOutcome(
                image_id=job.image_id,
                item_id=job.item_id,
                chunk_id=chunk.chunk_id,
                status="SUCCEEDED",
                model=model or job.model,
                backend=chunk.backend,
                seed=job.seed,
                cost_micro_usd=0,
                output_key=key,
                prompt_sha256=job.prompt_sha256,
                identity_sha256=identities[job.image_id],
                reused_from_batch_id=hit.source.batch_id,
                reused_from_image_id=hit.source.image_id,
                reuse_saved_micro_usd=saved_micro_usd(job),
            )
        )
    return reused
