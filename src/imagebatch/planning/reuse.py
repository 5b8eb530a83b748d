"""What reuse will spare a plan (docs/reuse.md): the images of a manifest whose identity some
batch already made are not counted in its estimate nor held against its budget, since the
chunk copies them instead of buying them (pipeline.reuse). Ingest, `validate` and `estimate`
ask the same image index (aws.image_index) through `MadeImages`; without one (offline, no
stack) the plan says reuse is unknown and counts every image.

Pure: the index is a Protocol here, because planning imports nothing of aws/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from imagebatch.backends.bedrock import bedrock_identity
from imagebatch.backends.routing import Backend
from imagebatch.models.bedrock_models import ModelCatalogue
from imagebatch.models.records import ImageJob, MadeImage


class MadeImages(Protocol):
    """The image index's read (aws.ledger.Ledger.find_made_images): one batched read."""

    def find_made_images(self, identities: Sequence[str]) -> Mapping[str, MadeImage]: ...


@dataclass
class ReuseTally:
    """What the plan's lookups found: images a chunk will copy, and the inference spared
    (exact; the plan rounds once)."""

    images: int = 0
    saved_exact: Decimal = Decimal(0)

    @property
    def saved_micro_usd(self) -> int:
        # rounded down: what the plan no longer counts is never overstated
        return int(self.saved_exact)


def plan_identity(job: ImageJob, backend: Backend, catalogue: ModelCatalogue) -> str | None:
    """The identity a chunk will look the job up by (None: it will not look it up)."""
    if not job.reuse or backend != "bedrock":
        return None
    spec = catalogue.get(job.model)
    return bedrock_identity(job, spec) if spec is not None else None


def reused_in_chunk(
    jobs: Sequence[ImageJob],
    backend: Backend,
    *,
    catalogue: ModelCatalogue,
    made: MadeImages,
) -> list[bool]:
    """For each job of one chunk, whether the chunk will copy it rather than make it: its
    identity is in the index (one batched read for the chunk), or an earlier job of the chunk
    has it (made once, copied after). A source deleted since is made after all, so this can
    only undercount what the chunk pays (docs/reuse.md)."""
    identities = [plan_identity(job, backend, catalogue) for job in jobs]
    wanted = sorted({identity for identity in identities if identity is not None})
    found = set(made.find_made_images(wanted)) if wanted else set()
    hits: list[bool] = []
    for identity in identities:
        hits.append(identity is not None and identity in found)
        if identity is not None:
            found.add(identity)
    return hits
