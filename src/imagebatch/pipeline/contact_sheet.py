"""A batch you can look at: a PNG grid of thumbnails with ids, and an HTML index.

Needs Pillow, which only the ContactSheetFunction carries (functions/contact_sheet/
requirements.txt); no other Lambda imports this module.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, report_key
from imagebatch.errors import BatchNotFoundError

THUMB = 128
LABEL_HEIGHT = 30
PAD = 6
COLUMNS = 20
# A reviewer scrolls one sheet of this many; a larger batch gets more sheets.
PER_SHEET = 500
INDEX_THUMB = 192
_BACKGROUND = (250, 250, 250)
_FAILED_TILE = (205, 70, 70)
_TEXT = (20, 20, 20)


class ContactSheetEvent(BaseModel):
    batch_id: str
    bucket: str


class ContactSheetResult(BaseModel):
    batch_id: str
    images: int
    sheet_keys: list[str]
    index_key: str


@dataclass(frozen=True)
class SheetEntry:
    """One image of the batch as the reviewer sees it."""

    image_id: str
    status: str
    prompt: str
    seed: int
    model: str
    cost_micro_usd: int
    output_key: str | None
    failure_class: str | None
    failure_reason: str | None
    tags: dict[str, str]


def entries_for(
    records: Iterable[dict[str, Any]], prompts: dict[str, tuple[str, dict[str, str]]]
) -> list[SheetEntry]:
    """Ledger records joined with the prompt and tags from the chunk files, in id order."""
    entries = []
    for record in records:
        prompt, tags = prompts.get(record["image_id"], ("", {}))
        entries.append(
            SheetEntry(
                image_id=record["image_id"],
                status=record["status"],
                prompt=prompt,
                seed=int(record.get("seed", 0)),
                model=str(record.get("model", "")),
                cost_micro_usd=int(record.get("cost_micro_usd", 0)),
                output_key=record.get("output_key"),
                failure_class=record.get("failure_class"),
                failure_reason=record.get("failure_reason"),
                tags=tags,
            )
        )
    return sorted(entries, key=lambda entry: entry.image_id)


def thumbnail(png: bytes, size: int) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        copy = image.convert("RGB")
    # Nearest keeps a 64x64 local image crisp; real images are downscaled with a filter.
    resample = Image.Resampling.NEAREST if max(copy.size) < size else Image.Resampling.LANCZOS
    if max(copy.size) < size:
        scale = size / max(copy.size)
        return copy.resize(
            (max(1, round(copy.width * scale)), max(1, round(copy.height * scale))), resample
        )
    copy.thumbnail((size, size), resample)
    return copy


def render_sheet(entries: Sequence[SheetEntry], thumbs: dict[str, Image.Image]) -> bytes:
    """One PNG: a grid of tiles, each a thumbnail (or a red failure tile) over its id."""
    columns = min(COLUMNS, max(1, len(entries)))
    rows = max(1, math.ceil(len(entries) / columns))
    tile_w, tile_h = THUMB + PAD, THUMB + LABEL_HEIGHT + PAD
    sheet = Image.new("RGB", (columns * tile_w + PAD, rows * tile_h + PAD), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for position, entry in enumerate(entries):
        left = PAD + (position % columns) * tile_w
        top = PAD + (position // columns) * tile_h
        thumb = thumbs.get(entry.image_id)
        if thumb is not None:
            sheet.paste(
                thumb, (left + (THUMB - thumb.width) // 2, top + (THUMB - thumb.height) // 2)
            )
        else:
            draw.rectangle((left, top, left + THUMB - 1, top + THUMB - 1), fill=_FAILED_TILE)
            draw.text(
                (left + 4, top + THUMB // 2 - 6),
                (entry.failure_class or entry.status)[:20],
                fill=(255, 255, 255),
                font=font,
            )
        draw.text((left, top + THUMB + 2), _fit(entry.image_id, 22), fill=_TEXT, font=font)
        second = f"${entry.cost_micro_usd / 1_000_000:.4f} seed {entry.seed}"
        draw.text((left, top + THUMB + 15), _fit(second, 22), fill=_TEXT, font=font)
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _data_uri(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def render_index(
    batch_id: str,
    summary: dict[str, Any],
    entries: Sequence[SheetEntry],
    thumbs: dict[str, Image.Image],
    sheet_names: Sequence[str],
) -> str:
    """Self-contained HTML (thumbnails inlined) that links each full image by its S3 key.

    Links are relative to reports/<batch-id>/, so they resolve wherever the bucket's layout
    is browsed or synced.
    """
    cards = []
    for entry in entries:
        thumb = thumbs.get(entry.image_id)
        picture = (
            f'<a href="../../{html.escape(entry.output_key)}">'
            f'<img src="{_data_uri(thumb)}" alt="{html.escape(entry.image_id)}"></a>'
            if thumb is not None and entry.output_key
            else f'<div class="failed">{html.escape(entry.failure_class or entry.status)}</div>'
        )
        reason = (
            f"<dd class='reason'>{html.escape(entry.failure_reason)}</dd>"
            if entry.failure_reason
            else ""
        )
        tags = " ".join(
            f"<span class='tag'>{html.escape(k)}={html.escape(v)}</span>"
            for k, v in sorted(entry.tags.items())
        )
        cards.append(
            f"<figure id='{html.escape(entry.image_id)}' class='{entry.status.lower()}'>"
            f"{picture}<figcaption><b>{html.escape(entry.image_id)}</b><dl>"
            f"<dt>prompt</dt><dd class='prompt'>{html.escape(entry.prompt)}</dd>"
            f"<dt>seed</dt><dd class='seed'>{entry.seed}</dd>"
            f"<dt>model</dt><dd class='model'>{html.escape(entry.model)}</dd>"
            f"<dt>cost</dt><dd class='cost'>${entry.cost_micro_usd / 1_000_000:.6f}</dd>"
            f"<dt>status</dt><dd class='status'>{html.escape(entry.status)}</dd>{reason}"
            f"</dl>{tags}</figcaption></figure>"
        )
    sheets = " ".join(
        f'<a href="{html.escape(name)}">{html.escape(name)}</a>' for name in sheet_names
    )
    total = int(summary.get("cost_micro_usd", 0))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>imagebatch {html.escape(batch_id)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; background: #fafafa; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }}
figure {{ margin: 0; background: #fff; border: 1px solid #ddd; padding: 8px; }}
figure img {{ width: 100%; image-rendering: pixelated; }}
figure.failed {{ border-color: #c44; }}
.failed {{ background: #cd4646; color: #fff; height: 120px; display: grid; place-items: center; }}
dl {{ display: grid; grid-template-columns: auto 1fr; gap: 2px 8px; margin: 6px 0; }}
dt {{ color: #666; }} dd {{ margin: 0; overflow-wrap: anywhere; }}
.tag {{ font-size: 11px; background: #eef; padding: 1px 4px; margin: 0 4px 2px 0;
        display: inline-block; max-width: 100%; overflow-wrap: anywhere; }}
</style></head><body>
<h1>Batch {html.escape(batch_id)}</h1>
<p id="summary">status <b>{html.escape(str(summary.get("status", "")))}</b> &middot;
{int(summary.get("images_succeeded", 0))} made, {int(summary.get("images_failed", 0))} failed
&middot; cost <b>${total / 1_000_000:.6f}</b> &middot; contact sheet: {sheets}</p>
<main>
{chr(10).join(cards)}
</main></body></html>
"""


def build_contact_sheet(
    batch_id: str,
    summary: dict[str, Any],
    entries: Sequence[SheetEntry],
    fetch_png: Callable[[str], bytes],
    put_report: Callable[[str, bytes, str], str],
) -> ContactSheetResult:
    """Fetch every made image, write the sheet PNG(s) and index.html; returns their keys."""

    def thumbs_of(size: int) -> Callable[[SheetEntry], tuple[str, Image.Image | None]]:
        def one(entry: SheetEntry) -> tuple[str, Image.Image | None]:
            if entry.status != "SUCCEEDED" or not entry.output_key:
                return entry.image_id, None
            return entry.image_id, thumbnail(fetch_png(entry.output_key), size)

        return one

    with ThreadPoolExecutor(max_workers=8) as pool:
        pairs = list(pool.map(thumbs_of(INDEX_THUMB), entries))
    index_thumbs = {image_id: thumb for image_id, thumb in pairs if thumb is not None}
    sheet_thumbs = {
        image_id: thumb.copy() if max(thumb.size) <= THUMB else _shrink(thumb, THUMB)
        for image_id, thumb in index_thumbs.items()
    }
    pages = [entries[i : i + PER_SHEET] for i in range(0, len(entries), PER_SHEET)] or [[]]
    names = [
        "contact-sheet.png" if number == 1 else f"contact-sheet-{number}.png"
        for number in range(1, len(pages) + 1)
    ]
    keys = [
        put_report(name, render_sheet(page, sheet_thumbs), "image/png")
        for name, page in zip(names, pages, strict=True)
    ]
    index = render_index(batch_id, summary, entries, index_thumbs, names)
    index_key = put_report("index.html", index.encode("utf-8"), "text/html; charset=utf-8")
    return ContactSheetResult(
        batch_id=batch_id, images=len(entries), sheet_keys=keys, index_key=index_key
    )


def _shrink(image: Image.Image, size: int) -> Image.Image:
    copy = image.copy()
    copy.thumbnail((size, size), Image.Resampling.LANCZOS)
    return copy


def build_batch_contact_sheet(
    event: ContactSheetEvent, *, store: BatchStore, ledger: Ledger
) -> ContactSheetResult:
    """The contact sheet of a finished batch, from its ledger records and chunk files."""
    summary = ledger.get_batch(event.batch_id)
    if summary is None:
        raise BatchNotFoundError(event.batch_id)
    prompts: dict[str, tuple[str, dict[str, str]]] = {}
    for ref in store.get_chunk_index(event.batch_id):
        for job in store.get_chunk(ref.key).images:
            prompts[job.image_id] = (job.prompt, job.tags)
    entries = entries_for(ledger.image_records(event.batch_id), prompts)
    return build_contact_sheet(
        event.batch_id,
        summary,
        entries,
        fetch_png=store.get_bytes,
        put_report=lambda name, body, content_type: store.put_bytes(
            report_key(event.batch_id, name), body, content_type
        ),
    )
