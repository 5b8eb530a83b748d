"""A batch you can look at: a PNG grid of thumbnails with ids, and an HTML index.

Needs Pillow, which only the ContactSheetFunction carries (functions/contact_sheet/
requirements.txt); no other Lambda imports this module.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, chunk_key, report_key
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
    index_keys: list[str] = []


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


def entry_for(record: Mapping[str, Any], prompt: str, tags: dict[str, str]) -> SheetEntry:
    """One ledger image record, with the prompt and tags from its chunk file."""
    return SheetEntry(
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


def _scaled(image: Image.Image, size: int) -> Image.Image:
    """`image` with its long side `size`: nearest-neighbour up (keeps a 64x64 local image
    crisp), a filter down (real images)."""
    if max(image.size) < size:
        scale = size / max(image.size)
        return image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.NEAREST,
        )
    copy = image.copy()
    copy.thumbnail((size, size), Image.Resampling.LANCZOS)
    return copy


def thumbnail(png: bytes, size: int) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        return _scaled(image.convert("RGB"), size)


def thumbnails(png: bytes) -> tuple[Image.Image, Image.Image]:
    """The index thumbnail (INDEX_THUMB) and the sheet's (THUMB) from one decode: a small
    image is scaled up to each directly, a large one filtered down once and then again."""
    with Image.open(io.BytesIO(png)) as image:
        source = image.convert("RGB")
    index = _scaled(source, INDEX_THUMB)
    sheet = _scaled(source if max(source.size) < THUMB else index, THUMB)
    return index, sheet


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
    *,
    page: PageNav | None = None,
) -> str:
    """Self-contained HTML (thumbnails inlined) that links each full image by its S3 key.

    Links are relative to reports/<batch-id>/, so they resolve wherever the bucket's layout
    is browsed or synced. A large batch has one such page per contact sheet; `page` says
    which, and each links to the others.
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
    pages = page.html() if page is not None and page.count > 1 else ""
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
{pages}<main>
{chr(10).join(cards)}
</main></body></html>
"""


@dataclass(frozen=True)
class PageNav:
    """Page `number` (from 1) of `count` index pages."""

    number: int
    count: int

    def html(self) -> str:
        links = " ".join(
            f"<b>{n}</b>" if n == self.number else f'<a href="{index_name(n)}">{n}</a>'
            for n in range(1, self.count + 1)
        )
        return f'<nav id="pages">page {self.number} of {self.count}: {links}</nav>\n'


def sheet_name(number: int) -> str:
    return "contact-sheet.png" if number == 1 else f"contact-sheet-{number}.png"


def index_name(number: int) -> str:
    return "index.html" if number == 1 else f"index-{number}.html"


def _pages(entries: Iterable[SheetEntry]) -> Iterator[tuple[list[SheetEntry], bool]]:
    """PER_SHEET entries at a time, and whether it is the last page (one page of look-ahead,
    never the whole batch)."""
    iterator = iter(entries)
    page = list(itertools.islice(iterator, PER_SHEET))
    while True:
        following = list(itertools.islice(iterator, PER_SHEET))
        yield page, not following
        if not following:
            return
        page = following


def build_contact_sheet(
    batch_id: str,
    summary: dict[str, Any],
    entries: Iterable[SheetEntry],
    fetch_png: Callable[[str], bytes],
    put_report: Callable[[str, bytes, str], str],
) -> ContactSheetResult:
    """Fetch every made image, write the sheet PNG(s) and index page(s); returns their keys.

    One page of PER_SHEET images at a time (a sheet PNG and its index page, thumbnails
    dropped after), so memory stays flat at any batch size: a 100,000-image batch gets 200
    sheets and 200 linked index pages.
    """

    def thumbs_of(entry: SheetEntry) -> tuple[str, tuple[Image.Image, Image.Image] | None]:
        if entry.status != "SUCCEEDED" or not entry.output_key:
            return entry.image_id, None
        return entry.image_id, thumbnails(fetch_png(entry.output_key))

    planned = max(1, math.ceil(int(summary.get("images_total", 0)) / PER_SHEET))
    sheet_keys: list[str] = []
    index_keys: list[str] = []
    images = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for number, (page, last) in enumerate(_pages(entries), start=1):
            pairs = {
                image_id: pair for image_id, pair in pool.map(thumbs_of, page) if pair is not None
            }
            index_thumbs = {image_id: index for image_id, (index, _) in pairs.items()}
            sheet_thumbs = {image_id: sheet for image_id, (_, sheet) in pairs.items()}
            del pairs
            name = sheet_name(number)
            sheet_keys.append(put_report(name, render_sheet(page, sheet_thumbs), "image/png"))
            nav = PageNav(number, number if last else max(planned, number + 1))
            index = render_index(batch_id, summary, page, index_thumbs, [name], page=nav)
            index_keys.append(
                put_report(index_name(number), index.encode("utf-8"), "text/html; charset=utf-8")
            )
            images += len(page)
    return ContactSheetResult(
        batch_id=batch_id,
        images=images,
        sheet_keys=sheet_keys,
        index_key=index_keys[0],
        index_keys=index_keys,
    )


class _ChunkPrompts:
    """Prompt and tags of an image, from its chunk file; the last few chunk files are kept
    (ledger order is id order, which usually follows the chunks), never the whole batch."""

    def __init__(self, store: BatchStore, batch_id: str, keep: int = 16) -> None:
        self._store = store
        self._batch_id = batch_id
        self._keep = keep
        self._chunks: OrderedDict[str, dict[str, tuple[str, dict[str, str]]]] = OrderedDict()

    def of(self, record: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
        chunk_id = record.get("chunk_id")
        if not chunk_id:
            return "", {}
        jobs = self._chunks.get(chunk_id)
        if jobs is None:
            chunk = self._store.get_chunk(chunk_key(self._batch_id, chunk_id))
            jobs = {job.image_id: (job.prompt, job.tags) for job in chunk.images}
            self._chunks[chunk_id] = jobs
            if len(self._chunks) > self._keep:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(chunk_id)
        return jobs.get(record["image_id"], ("", {}))


def build_batch_contact_sheet(
    event: ContactSheetEvent, *, store: BatchStore, ledger: Ledger
) -> ContactSheetResult:
    """The contact sheet of a finished batch, streamed from its ledger records (id order)
    joined with their chunk files' prompts."""
    summary = ledger.get_batch(event.batch_id)
    if summary is None:
        raise BatchNotFoundError(event.batch_id)
    prompts = _ChunkPrompts(store, event.batch_id)
    entries = (
        entry_for(record, *prompts.of(record)) for record in ledger.image_records(event.batch_id)
    )
    return build_contact_sheet(
        event.batch_id,
        summary,
        entries,
        fetch_png=store.get_bytes,
        put_report=lambda name, body, content_type: store.put_bytes(
            report_key(event.batch_id, name), body, content_type
        ),
    )
