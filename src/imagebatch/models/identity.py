"""An image's identity: a sha256 of everything that decides its pixels (docs/reuse.md).

Two jobs with the same identity make the same image, so a batch may copy an image an earlier
batch made instead of buying it again. What counts: the backend and its model as the backend
names it (a Bedrock model id carries its version; an endpoint's model, compile and buckets),
the request family and its version (how a job becomes a request), the prompt, the negative
prompt, the seed, the size, the steps, the guidance and every model option. What does not:
tags, item and image ids, the line, the output prefix, the batch. A seed derived from the
item id (planning.routing.seed_for) is counted as the seed it became, so an unchanged line
keeps its identity and a renamed one does not.

Pure: strings in, a hex digest out; the backends say what their model is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from imagebatch.models.records import ImageJob

# Bumped when what the digest covers changes: every earlier identity then stops matching, so
# a change of rule can never make an old image pass for a new one.
IDENTITY_VERSION = 1


def image_identity(
    job: ImageJob,
    *,
    backend: str,
    backend_model: Mapping[str, str],
    request_family: str,
    family_version: int,
    options: Mapping[str, str | int | float | bool | None] | None = None,
) -> str:
    """The job's identity under `backend` (hex sha256).

    `backend_model` is what the backend runs (Bedrock: the model id; an endpoint: its model,
    compile and buckets); `options` any further model option the request carries. The
    document hashed is canonical JSON (sorted keys, no spaces), so the order of a mapping
    never changes an identity.
    """
    document = {
        "identity_version": IDENTITY_VERSION,
        "backend": backend,
        "backend_model": dict(backend_model),
        "request_family": request_family,
        "family_version": family_version,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "seed": job.seed,
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "guidance": job.guidance,
        "options": dict(options or {}),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
