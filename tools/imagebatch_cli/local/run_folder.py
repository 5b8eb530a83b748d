"""A local run's output folder: <out>/<batch-id>/, emptied before a batch id runs again.

The batch id comes from the manifest's bucket, key and ETag, so running the same manifest
again locally lands in the same folder; without a clean start an image that failed this time
would still show the PNG an earlier run made.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_batch_folder(out: Path, batch_id: str) -> Path:
    """<out>/<batch-id>/, empty. Only that folder is removed, never `out` itself."""
    if not batch_id or "/" in batch_id or batch_id in {".", ".."}:
        raise ValueError(f"not a batch id: {batch_id!r}")
    target = out / batch_id
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return target
