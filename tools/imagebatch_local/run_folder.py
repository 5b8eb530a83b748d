"""A local run's output folder: <out>/<batch-id>/, emptied before a batch id runs again.

The batch id comes from the manifest's bucket, key and ETag, so running the same manifest
again locally lands in the same folder; without a clean start an image that failed this time
would still show the PNG an earlier run made.
"""

from __future__ import annotations

import html
import re
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


_LINK = re.compile(r'href="[^"]*" data-key="([^"]+)"')


def relink_review_page(target: Path) -> Path | None:
    """Point the review page's image links at the local copies.

    The contact-sheet Lambda writes reports/<batch-id>/index.html for the bucket's layout
    (../../outputs/<batch-id>/<image>.png); the local export keeps images in <out>/<batch-id>/
    and the page in <out>/<batch-id>/reports/, so each link becomes ../<image>.png. The page
    names every link's key in data-key, which is what is rewritten from.
    """
    page = target / "reports" / "index.html"
    if not page.exists():
        return None
    text = page.read_text(encoding="utf-8")

    def local(match: re.Match[str]) -> str:
        key = match.group(1)
        return f'href="../{html.escape(key.rsplit("/", 1)[-1])}" data-key="{key}"'

    page.write_text(_LINK.sub(local, text), encoding="utf-8")
    return page
