"""How a contact sheet looks: the PNG grid of thumbnails with ids, and the HTML index
pages (pure drawing and markup; `contact_sheet.py` reads the batch and writes the pages).

Needs Pillow, which only the ContactSheetFunction carries (functions/contact_sheet/
requirements.txt); no other Lambda imports this module.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from imagebatch.costs import terms
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.money import format_usd

THUMB = 128
# three label lines under each tile: id, seed, cost (or failure class)
LABEL_HEIGHT = 44
PAD = 6
# the most columns a sheet has; fewer images are laid out near-square (sheet_columns)
COLUMNS = 24
HEADER_LINE = 18
# A reviewer scrolls one sheet of this many; a larger batch gets more sheets.
PER_SHEET = 500
INDEX_THUMB = 192
_BACKGROUND = (250, 250, 250)
_FAILED_TILE = (205, 70, 70)
_TEXT = (20, 20, 20)


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
    # A copy of an earlier image of the same identity (docs/reuse.md): its batch and image,
    # and the inference it did not pay; None when the image was made.
    reused_from: tuple[str, str] | None = None
    reuse_saved_micro_usd: int = 0


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
        reused_from=(
            (str(record["reused_from_batch_id"]), str(record.get("reused_from_image_id", "")))
            if record.get("reused_from_batch_id")
            else None
        ),
        reuse_saved_micro_usd=int(record.get("reuse_saved_micro_usd") or 0),
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


def sheet_columns(images: int) -> int:
    """Columns that make the grid of `images` tiles about as tall as it is wide."""
    tile_w, tile_h = THUMB + PAD, THUMB + LABEL_HEIGHT + PAD
    return max(1, min(COLUMNS, images, math.ceil(math.sqrt(images * tile_h / tile_w))))


def sheet_header(
    batch_id: str, summary: BatchRecord, first: int, last: int, total: int
) -> list[str]:
    """The lines over a sheet: the batch, its outcome and money, and which images it shows.
    What the batch was charged is always there: the ledger writes it (0) with the record."""
    costs = summary.costs or {}
    money = []
    if "total" in costs:
        money.append(f"total {format_usd(costs['total'])}")
    money.append(f"charged {format_usd(summary.spent_micro_usd)}")
    counts = (
        f"status {summary.status or '-'} · {summary.images_succeeded} made"
        f" · {summary.images_failed} failed"
    )
    return [
        f"batch {batch_id}",
        " · ".join([counts, *money]),
        f"images {first}-{last} of {total}" if total else "no images",
    ]


def render_sheet(
    entries: Sequence[SheetEntry], thumbs: dict[str, Image.Image], header: Sequence[str] = ()
) -> bytes:
    """One PNG: the header lines, then a near-square grid of tiles, each a thumbnail (or a
    red failure tile with its class) over its id, seed and cost."""
    columns = sheet_columns(len(entries))
    rows = max(1, math.ceil(len(entries) / columns))
    tile_w, tile_h = THUMB + PAD, THUMB + LABEL_HEIGHT + PAD
    title_font = ImageFont.load_default(size=15)
    font = ImageFont.load_default(size=11)
    header_h = (len(header) * HEADER_LINE + PAD) if header else 0
    text_w = max((int(title_font.getlength(line)) for line in header), default=0)
    width = max(columns * tile_w + PAD, text_w + 2 * PAD)
    sheet = Image.new("RGB", (width, header_h + rows * tile_h + PAD), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for number, line in enumerate(header):
        draw.text(
            (PAD, PAD + number * HEADER_LINE),
            line,
            fill=_TEXT,
            font=title_font if number == 0 else font,
        )
    for position, entry in enumerate(entries):
        left = PAD + (position % columns) * tile_w
        top = header_h + PAD + (position // columns) * tile_h
        thumb = thumbs.get(entry.image_id)
        if thumb is not None:
            sheet.paste(
                thumb, (left + (THUMB - thumb.width) // 2, top + (THUMB - thumb.height) // 2)
            )
        else:
            draw.rectangle((left, top, left + THUMB - 1, top + THUMB - 1), fill=_FAILED_TILE)
            draw.text(
                (left + 4, top + THUMB // 2 - 6),
                _fit(entry.failure_class or entry.status, 20),
                fill=(255, 255, 255),
                font=font,
            )
        cost = (
            format_usd(entry.cost_micro_usd, places=4)
            if entry.status == "SUCCEEDED"
            else f"failed: {entry.failure_class or entry.status}"
        )
        for row, text in enumerate((entry.image_id, f"seed {entry.seed}", cost)):
            draw.text((left, top + THUMB + 2 + 13 * row), _fit(text, 22), fill=_TEXT, font=font)
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _data_uri(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _card(entry: SheetEntry, thumb: Image.Image | None) -> str:
    """One image's card: the picture (linked to the full PNG) or a failure tile with its
    class, then prompt, seed, model, cost, and for a failed image its reason."""
    image_id = html.escape(entry.image_id)
    if thumb is not None and entry.output_key:
        key = html.escape(entry.output_key)
        picture = (
            f'<a class="full" href="../../{key}" data-key="{key}">'
            f'<img src="{_data_uri(thumb)}" alt="{image_id}"></a>'
        )
    else:
        picture = (
            f'<div class="failure-tile">{html.escape(entry.failure_class or entry.status)}</div>'
        )
    reason = (
        f"<dt>reason</dt><dd class='reason'>{html.escape(entry.failure_reason)}</dd>"
        if entry.failure_reason
        else ""
    )
    reuse = (
        f"<dt>reuse</dt><dd class='reuse'>reused from {html.escape(entry.reused_from[0])} / "
        f"{html.escape(entry.reused_from[1])}, saved {format_usd(entry.reuse_saved_micro_usd)}"
        "</dd>"
        if entry.reused_from
        else ""
    )
    tags = " ".join(
        f"<span class='tag'>{html.escape(k)}={html.escape(v)}</span>"
        for k, v in sorted(entry.tags.items())
    )
    return (
        f"<figure id='{image_id}' class='card {entry.status.lower()}'>"
        f"{picture}<figcaption><b>{image_id}</b><dl>"
        f"<dt>status</dt><dd class='status'>{html.escape(entry.status)}</dd>{reason}"
        f"<dt>prompt</dt><dd class='prompt'>{html.escape(entry.prompt)}</dd>"
        f"<dt>seed</dt><dd class='seed'>{entry.seed}</dd>"
        f"<dt>model</dt><dd class='model'>{html.escape(entry.model)}</dd>"
        f"<dt>cost</dt><dd class='cost'>{format_usd(entry.cost_micro_usd)}</dd>{reuse}"
        f"</dl>{tags}</figcaption></figure>"
    )


def _money_rows(summary: BatchRecord) -> list[tuple[str, str]]:
    """The batch's money in the one vocabulary (costs/terms.py): categories, total, charged,
    estimate, budget."""
    rows = []
    costs = summary.costs or {}
    for category, label in terms.CATEGORY_LABELS.items():
        if category in costs:
            rows.append((label, format_usd(costs[category])))
    if "inference" not in costs:
        rows.append(("inference", format_usd(summary.cost_micro_usd)))
    rows.append((terms.CHARGED, format_usd(summary.spent_micro_usd)))
    # only a batch that reused images shows the rows, as `imagebatch cost` does
    if summary.images_reused:
        rows.append((terms.REUSED.strip(), str(summary.images_reused)))
        rows.append((terms.REUSE_SAVED, format_usd(summary.reuse_saved_micro_usd)))
    if summary.estimate_total_micro_usd is not None:
        rows.append((terms.ESTIMATE, format_usd(summary.estimate_total_micro_usd)))
    if summary.max_cost_micro_usd is not None:
        rows.append((terms.BUDGET, format_usd(summary.max_cost_micro_usd)))
    return rows


def _header(batch_id: str, summary: BatchRecord, sheet_names: Sequence[str]) -> str:
    counts = [
        ("status", str(summary.status or "-")),
        ("images requested", str(summary.images_total)),
        ("made", str(summary.images_succeeded)),
        ("failed", str(summary.images_failed)),
    ]
    cells = "".join(
        f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>"
        for k, v in [*counts, *_money_rows(summary)]
    )
    costs = summary.costs or {}
    note = None
    if "total" in costs:
        note = terms.charge_note(
            costs["total"],
            summary.spent_micro_usd,
            summary.unsettled_micro_usd,
            over_cap_micro_usd=summary.over_cap_micro_usd,
        )
    sheets = " ".join(
        f'<a href="{html.escape(name)}">{html.escape(name)}</a>' for name in sheet_names
    )
    return (
        f"<header><h1>Batch {html.escape(batch_id)}</h1>"
        f"<dl id='summary' class='facts'>{cells}</dl>"
        + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
        + f"<p>contact sheet: {sheets}</p></header>"
    )


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #1a1a1a; }
header .facts { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 0 0 8px; }
header .facts div { display: flex; gap: 6px; } header .facts dd { margin: 0; font-weight: 600; }
.note { color: #555; font-size: 13px; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; }
figure.card { margin: 0; background: #fff; color: #1a1a1a; border: 1px solid #ddd; padding: 8px; }
figure.card img { width: 100%; image-rendering: pixelated; }
figure.card.failed { border: 2px solid #b42318; }
.failure-tile { background: #b42318; color: #fff; font-weight: 600; aspect-ratio: 1;
  display: grid; place-items: center; padding: 8px; text-align: center; }
figure.card dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 8px; margin: 6px 0; }
figure.card dt { color: #555; } figure.card dd { margin: 0; overflow-wrap: anywhere; }
figure.card dd.reason { color: #b42318; font-weight: 600; }
.tag { font-size: 11px; background: #eef; color: #1a1a1a; padding: 1px 4px;
  margin: 0 4px 2px 0; display: inline-block; max-width: 100%; overflow-wrap: anywhere; }
"""


def render_index(
    batch_id: str,
    summary: BatchRecord,
    entries: Sequence[SheetEntry],
    thumbs: dict[str, Image.Image],
    sheet_names: Sequence[str],
    *,
    page: PageNav | None = None,
) -> str:
    """Self-contained HTML (thumbnails inlined): a header with the batch's status, counts and
    money, then a card per image linking its full PNG.

    Links are relative to reports/<batch-id>/ in the bucket (../../<output key>), so they
    resolve in the bucket's layout; each carries its key in data-key, so a copy laid out
    differently (`imagebatch local run`'s export) can point it at its own files. A large batch
    has one such page per contact sheet; `page` says which, and each links to the others.
    """
    pages = page.html() if page is not None and page.count > 1 else ""
    cards = "\n".join(_card(entry, thumbs.get(entry.image_id)) for entry in entries)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>imagebatch {html.escape(batch_id)}</title>
<style>{_STYLE}</style></head><body>
{_header(batch_id, summary, sheet_names)}
{pages}<main>
{cards}
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
