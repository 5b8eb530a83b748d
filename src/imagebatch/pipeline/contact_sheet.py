"""A batch you can look at: reads the batch's image records page by page and writes the
contact sheet's PNGs and HTML index pages (drawn by `contact_sheet_render.py`).

Needs Pillow, which only the ContactSheetFunction carries (functions/contact_sheet/
requirements.txt); no other Lambda imports this module.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore, chunk_key, report_key
from imagebatch.errors import BatchNotFoundError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.pipeline.contact_sheet_render import (
    PER_SHEET,
    PageNav,
    SheetEntry,
    entry_for,
    index_name,
    render_index,
    render_sheet,
    sheet_header,
    sheet_name,
    thumbnails,
)


class SheetPosition(BaseModel):
    """Where a contact sheet continues: its next page number, and the last image id the
    pages before it showed (None: from the first image)."""

    page: int = Field(default=1, ge=1)
    after_image_id: str | None = None

    @property
    def images_before(self) -> int:
        """Images on the pages before this one (every page but the last is full)."""
        return (self.page - 1) * PER_SHEET


class ContactSheetEvent(BaseModel):
    batch_id: str
    bucket: str
    # The execution building it: a large batch's sheet takes more than one invocation
    # (Lambda stops at 15 minutes), and a retry of this execution's task goes on where the
    # last invocation recorded it stopped; another execution starts from the first page.
    execution: str | None = None
    # ContactSheetFailed: the sheet failed for good (its retries spent); write off the hold
    # its last attempt left, which no later attempt will, and build nothing
    write_off: bool = False


class ContactSheetResult(BaseModel):
    batch_id: str
    # images shown by this invocation's pages
    images: int
    sheet_keys: list[str]
    index_key: str | None
    index_keys: list[str] = []
    # Where to go on when it stopped between pages for lack of time; None: it is complete.
    next: SheetPosition | None = None


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


# Kept whole: one page loop with one page of look-ahead, whose position, thumbnails and
# time check are shared state of the loop.
def build_contact_sheet(
    batch_id: str,
    summary: BatchRecord,
    entries: Iterable[SheetEntry],
    fetch_png: Callable[[str], bytes],
    put_report: Callable[[str, bytes, str], str],
    *,
    start: SheetPosition | None = None,
    may_start_page: Callable[[], bool] = lambda: True,
) -> ContactSheetResult:
    """Fetch every made image, write the sheet PNG(s) and index page(s); returns their keys.

    One page of PER_SHEET images at a time (a sheet PNG and its index page, thumbnails
    dropped after), so memory stays flat at any batch size: a 100,000-image batch gets 200
    sheets and 200 linked index pages. Before each page after the first, `may_start_page`
    says whether there is time for it; when not, the result says where to continue
    (`start`, after the pages before it).
    """

    def thumbs_of(entry: SheetEntry) -> tuple[str, tuple[Image.Image, Image.Image] | None]:
        if entry.status != "SUCCEEDED" or not entry.output_key:
            return entry.image_id, None
        return entry.image_id, thumbnails(fetch_png(entry.output_key))

    start = start or SheetPosition()
    total = summary.images_total
    planned = max(1, math.ceil(total / PER_SHEET))
    sheet_keys: list[str] = []
    index_keys: list[str] = []
    shown = start.images_before
    after = start.after_image_id
    with ThreadPoolExecutor(max_workers=8) as pool:
        for number, (page, last) in enumerate(_pages(entries), start=start.page):
            if number > start.page and not may_start_page():
                return ContactSheetResult(
                    batch_id=batch_id,
                    images=shown - start.images_before,
                    sheet_keys=sheet_keys,
                    index_key=index_keys[0] if index_keys else None,
                    index_keys=index_keys,
                    next=SheetPosition(page=number, after_image_id=after),
                )
            if not page and number > 1:
                break  # the earlier invocation ended exactly at the last image
            pairs = {
                image_id: pair for image_id, pair in pool.map(thumbs_of, page) if pair is not None
            }
            index_thumbs = {image_id: index for image_id, (index, _) in pairs.items()}
            sheet_thumbs = {image_id: sheet for image_id, (_, sheet) in pairs.items()}
            del pairs
            name = sheet_name(number)
            header = sheet_header(
                batch_id, summary, shown + 1, shown + len(page), max(total, shown + len(page))
            )
            sheet_keys.append(
                put_report(name, render_sheet(page, sheet_thumbs, header), "image/png")
            )
            nav = PageNav(number, number if last else max(planned, number + 1))
            index = render_index(batch_id, summary, page, index_thumbs, [name], page=nav)
            index_keys.append(
                put_report(index_name(number), index.encode("utf-8"), "text/html; charset=utf-8")
            )
            shown += len(page)
            if page:
                after = page[-1].image_id
    return ContactSheetResult(
        batch_id=batch_id,
        images=shown - start.images_before,
        sheet_keys=sheet_keys,
        index_key=index_keys[0] if index_keys else None,
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
    event: ContactSheetEvent,
    *,
    store: BatchStore,
    ledger: Ledger,
    start: SheetPosition | None = None,
    may_start_page: Callable[[], bool] = lambda: True,
) -> ContactSheetResult:
    """The contact sheet of a finished batch (from `start` on), streamed from its ledger
    records (id order) joined with their chunk files' prompts."""
    summary = ledger.get_batch(event.batch_id)
    if summary is None:
        raise BatchNotFoundError(event.batch_id)
    prompts = _ChunkPrompts(store, event.batch_id)
    position = start or SheetPosition()
    records = ledger.image_records(event.batch_id, after_image_id=position.after_image_id)
    entries = (entry_for(record, *prompts.of(record)) for record in records)
    return build_contact_sheet(
        event.batch_id,
        summary,
        entries,
        fetch_png=store.get_bytes,
        put_report=lambda name, body, content_type: store.put_bytes(
            report_key(event.batch_id, name), body, content_type
        ),
        start=position,
        may_start_page=may_start_page,
    )
