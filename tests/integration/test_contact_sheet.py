"""The contact sheet: a decodable PNG grid with a tile per image, and an HTML index."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus
from imagebatch.pipeline.contact_sheet import build_contact_sheet
from imagebatch.pipeline.contact_sheet_render import (
    COLUMNS,
    HEADER_LINE,
    LABEL_HEIGHT,
    PAD,
    PER_SHEET,
    THUMB,
    SheetEntry,
    sheet_columns,
)


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def entry(i: int, *, ok: bool = True) -> SheetEntry:
    return SheetEntry(
        image_id=f"SKU-{i:03d}.front-1",
        status="SUCCEEDED" if ok else "FAILED",
        prompt=f"a <b>bold</b> mug number {i}",
        seed=1000 + i,
        model="stability.sd3-5-large-v1:0",
        cost_micro_usd=80_000 if ok else 0,
        output_key=f"outputs/b/SKU-{i:03d}.front-1.png" if ok else None,
        failure_class=None if ok else "content_filtered",
        failure_reason=None if ok else "Filter reason: prompt",
        tags={"sku": f"SKU-{i:03d}", "variant": "front"},
    )


class _Index(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "figure":
            self.figures.append(values["id"] or "")
        if tag == "img":
            self.images.append(values["src"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def build(entries: list[SheetEntry], sources: dict[str, bytes]) -> dict[str, bytes]:
    written: dict[str, bytes] = {}

    def put(name: str, body: bytes, content_type: str) -> str:
        written[name] = body
        return f"reports/b/{name}"

    build_contact_sheet("b", SUMMARY, entries, sources.__getitem__, put)
    return written


# A settled summary as finalize leaves it: categories, charged, estimate, budget.
SUMMARY = BatchRecord(
    batch_id="b",
    status=BatchStatus.PARTIAL,
    images_total=3,
    images_succeeded=2,
    images_failed=1,
    cost_micro_usd=160_000,
    costs={"inference": 160_000, "orchestration": 275, "storage": 4, "total": 160_279},
    spent_micro_usd=160_280,
    estimate_total_micro_usd=240_900,
    max_cost_micro_usd=5_000_000,
)
HEADER_H = 3 * HEADER_LINE + PAD


def test_sheet_has_a_tile_per_image_and_failed_images_are_red() -> None:
    entries = [entry(1), entry(2, ok=False), entry(3)]
    sources = {
        "outputs/b/SKU-001.front-1.png": png(64, 64, (0, 0, 255)),
        "outputs/b/SKU-003.front-1.png": png(112, 64, (0, 200, 0)),
    }
    written = build(entries, sources)

    sheet = Image.open(io.BytesIO(written["contact-sheet.png"])).convert("RGB")
    tile_w, tile_h = THUMB + PAD, THUMB + LABEL_HEIGHT + PAD
    # three tiles near-square: two columns, two rows, under the header
    assert sheet_columns(3) == 2
    assert sheet.size[1] == HEADER_H + 2 * tile_h + PAD
    assert sheet.size[0] >= 2 * tile_w + PAD
    top, centre = HEADER_H + PAD, THUMB // 2
    assert sheet.getpixel((PAD + centre, top + centre)) == (0, 0, 255)
    red = sheet.getpixel((PAD + tile_w + 4, top + 4))
    assert isinstance(red, tuple) and red[0] > 150 and red[1] < 100
    green = sheet.getpixel((PAD + centre, top + tile_h + centre))
    assert isinstance(green, tuple) and green[1] >= 190
    # the header is drawn: dark text pixels above the grid
    header = sheet.crop((0, 0, sheet.size[0], HEADER_H)).convert("L")
    levels = [v for v in header.get_flattened_data() if isinstance(v, int | float)]
    assert levels and min(levels) < 80


def test_the_demo_sized_sheet_is_near_square_with_whole_seeds() -> None:
    entries = [entry(i) for i in range(15)]
    one = png(64, 64, (9, 9, 9))
    written = build(entries, {e.output_key: one for e in entries if e.output_key})
    width, height = Image.open(io.BytesIO(written["contact-sheet.png"])).size
    assert 0.6 <= width / height <= 1.6, (width, height)
    assert sheet_columns(15) in {4, 5}


def test_index_lists_every_image_with_prompt_seed_model_and_cost_escaped() -> None:
    entries = [entry(1), entry(2, ok=False), entry(3)]
    sources = {
        "outputs/b/SKU-001.front-1.png": png(64, 64, (0, 0, 255)),
        "outputs/b/SKU-003.front-1.png": png(64, 64, (0, 200, 0)),
    }
    html = build(entries, sources)["index.html"].decode()
    parsed = _Index()
    parsed.feed(html)

    assert parsed.figures == [e.image_id for e in entries]
    assert len(parsed.images) == 2
    for src in parsed.images:
        header, data = src.split(",", 1)
        assert header == "data:image/jpeg;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "JPEG"
    text = "".join(parsed.text)
    assert "a <b>bold</b> mug number 1" in text  # shown as text, not markup
    assert "<b>bold</b>" not in html
    assert "1001" in text and "stability.sd3-5-large-v1:0" in text
    assert "$0.080000" in text and "content_filtered" in text and "Filter reason: prompt" in text
    assert 'href="../../outputs/b/SKU-001.front-1.png"' in html


def test_large_batches_get_more_sheets() -> None:
    entries = [entry(i) for i in range(PER_SHEET + 3)]
    one = png(8, 8, (9, 9, 9))
    sources = {e.output_key: one for e in entries if e.output_key}
    written = build(entries, sources)
    assert sorted(n for n in written if n.endswith(".png")) == [
        "contact-sheet-2.png",
        "contact-sheet.png",
    ]
    second = Image.open(io.BytesIO(written["contact-sheet-2.png"]))
    assert sheet_columns(3) == 2 and second.size[0] >= 2 * (THUMB + PAD) + PAD
    first = Image.open(io.BytesIO(written["contact-sheet.png"]))
    assert first.size[0] == COLUMNS * (THUMB + PAD) + PAD


# The Makefile's `chromium` target (run by `make test`) installs one where apt-get can.
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
_BROWSER = next((found for name in _BROWSER_NAMES if (found := shutil.which(name))), None)
_NO_BROWSER = (
    f"no headless Chromium on this machine: none of {', '.join(_BROWSER_NAMES)} is on PATH "
    "(`make chromium` installs Debian's chromium package where apt-get can, and says why not)"
)


@pytest.mark.skipif(_BROWSER is None, reason=_NO_BROWSER)
def test_index_renders_in_a_headless_browser(tmp_path: Path) -> None:
    entries = [entry(1), entry(2, ok=False), entry(3)]
    sources = {
        "outputs/b/SKU-001.front-1.png": png(64, 64, (0, 0, 255)),
        "outputs/b/SKU-003.front-1.png": png(64, 64, (0, 200, 0)),
    }
    page = tmp_path / "index.html"
    page.write_bytes(build(entries, sources)["index.html"])
    shot = tmp_path / "shot.png"
    assert _BROWSER is not None
    subprocess.run(
        [
            _BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1000,700",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    rendered = Image.open(shot).convert("RGB")
    colours = [
        (count, rgb)
        for count, rgb in rendered.getcolors(maxcolors=1 << 20) or []
        if isinstance(rgb, tuple)
    ]
    # the inlined thumbnails were decoded and painted: pure blue and green areas exist
    assert any(c[1][2] > 200 and c[1][0] < 40 and c[1][1] < 40 and c[0] > 1000 for c in colours)
    assert any(c[1][1] > 180 and c[1][0] < 40 and c[1][2] < 40 and c[0] > 1000 for c in colours)


def test_index_header_has_status_counts_and_the_money_in_one_vocabulary() -> None:
    entries = [entry(1), entry(2, ok=False), entry(3)]
    one = png(8, 8, (9, 9, 9))
    page = build(entries, {e.output_key: one for e in entries if e.output_key})["index.html"]
    parsed = _Index()
    parsed.feed(page.decode())
    text = " ".join(t.strip() for t in parsed.text if t.strip())
    for words in (
        "status PARTIAL",
        "images requested 3",
        "made 2",
        "failed 1",
        "inference $0.160000",
        "orchestration $0.000275",
        "storage (1 month) $0.000004",
        "total $0.160279",
        "charged to budget $0.160280",
        "estimate (before run) $0.240900",
        "budget (max_cost_usd) $5.000000",
        "$0.000001 more than the total",
    ):
        assert words in text, words


# Reads the failed card's rendered size, colours and text back out of the page.
_PROBE = """<script>
const rgb = (c) => c.match(/[0-9.]+/g).slice(0, 3).map(Number);
const background = (el) => {
  for (; el; el = el.parentElement) {
    const c = getComputedStyle(el).backgroundColor;
    if (c !== "rgba(0, 0, 0, 0)" && c !== "transparent") return rgb(c);
  }
  return [255, 255, 255];
};
const look = (el) => {
  const box = el.getBoundingClientRect();
  return {w: box.width, h: box.height, fg: rgb(getComputedStyle(el).color), bg: background(el),
          text: el.innerText};
};
const card = document.getElementById("SKU-002.front-1");
const found = {tile: look(card.querySelector(".failure-tile")),
               reason: look(card.querySelector(".reason")),
               id: look(card.querySelector("figcaption b")),
               card: look(card), header: document.querySelector("header").innerText};
const pre = document.createElement("pre");
pre.id = "probe";
pre.textContent = JSON.stringify(found);
document.body.appendChild(pre);
</script>"""


def _luminance(rgb: list[float]) -> float:
    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: list[float], b: list[float]) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.skipif(_BROWSER is None, reason=_NO_BROWSER)
def test_the_failed_card_is_readable_in_a_browser(tmp_path: Path) -> None:
    # GIVEN the review page of a batch with a failed image, opened in headless Chromium
    import html as html_module
    import json
    import re

    entries = [entry(1), entry(2, ok=False), entry(3)]
    one = png(64, 64, (0, 0, 255))
    page = build(entries, {e.output_key: one for e in entries if e.output_key})["index.html"]
    probed = tmp_path / "index.html"
    probed.write_text(page.decode().replace("</body>", _PROBE + "</body>"))
    assert _BROWSER is not None
    dom = subprocess.run(
        [
            _BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,900",
            "--dump-dom",
            probed.as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert match, dom[-2000:]
    found = json.loads(html_module.unescape(match.group(1)))

    # THEN the failure tile is a full-size tile naming its class, legible on its colour
    tile = found["tile"]
    assert tile["w"] >= 150 and tile["h"] >= 150, tile
    assert tile["text"].strip() == "content_filtered"
    assert contrast(tile["fg"], tile["bg"]) >= 4.5, tile
    # AND the card's id and reason are dark text on a light card, not white on white
    for part in (found["id"], found["reason"]):
        assert part["w"] > 0 and part["h"] > 0, part
        assert contrast(part["fg"], part["bg"]) >= 4.5, part
    assert found["reason"]["text"] == "Filter reason: prompt"
    assert "charged to budget" in found["header"] and "PARTIAL" in found["header"]


def test_pages_are_written_as_entries_arrive_and_link_each_other() -> None:
    # GIVEN two and a half sheets' worth of entries, handed over lazily
    total = 2 * PER_SHEET + 7
    pulled = 0

    def entries() -> Iterator[SheetEntry]:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield entry(i, ok=i % 50 != 0)

    one = png(8, 8, (9, 9, 9))
    pulled_at_put: dict[str, int] = {}
    written: dict[str, bytes] = {}

    def put(name: str, body: bytes, content_type: str) -> str:
        pulled_at_put[name] = pulled
        written[name] = body
        return f"reports/b/{name}"

    # WHEN the contact sheet is built
    result = build_contact_sheet(
        "b", BatchRecord(batch_id="b", images_total=total), entries(), lambda key: one, put
    )
    # THEN each page was written before more than one page beyond it was read (flat memory)
    assert pulled_at_put["contact-sheet.png"] <= 2 * PER_SHEET
    assert pulled_at_put["index.html"] <= 2 * PER_SHEET
    assert result.images == total
    assert result.sheet_keys == [
        "reports/b/contact-sheet.png",
        "reports/b/contact-sheet-2.png",
        "reports/b/contact-sheet-3.png",
    ]
    assert result.index_keys == [
        "reports/b/index.html",
        "reports/b/index-2.html",
        "reports/b/index-3.html",
    ]
    # AND each index page holds its own images and links to the other pages
    second = _Index()
    second.feed(written["index-2.html"].decode())
    assert second.figures == [entry(i).image_id for i in range(PER_SHEET, 2 * PER_SHEET)]
    page_two = written["index-2.html"].decode()
    assert 'href="index.html"' in page_two and 'href="index-3.html"' in page_two
    assert 'href="contact-sheet-2.png"' in page_two
    assert "page 2 of 3" in page_two


def test_the_review_page_shows_which_images_were_reused_and_the_saving() -> None:
    from imagebatch.pipeline.contact_sheet_render import entry_for

    # GIVEN a batch with a made image and one copied from an earlier batch's image
    made = {"image_id": "a-1", "status": "SUCCEEDED", "seed": 1, "cost_micro_usd": 80_000}
    made |= {"model": "m", "output_key": "outputs/b/a-1.png"}
    reused = made | {
        "image_id": "b-1",
        "cost_micro_usd": 0,
        "output_key": "outputs/b/b-1.png",
        "reused_from_batch_id": "older-batch",
        "reused_from_image_id": "x-1",
        "reuse_saved_micro_usd": 80_000,
    }
    entries = [entry_for(made, "a mug", {}), entry_for(reused, "a mug", {})]
    summary = SUMMARY.model_copy(
        update={"images_reused": 1, "reuse_saved_micro_usd": 80_000, "images_failed": 0}
    )
    one = png(8, 8, (9, 9, 9))
    written: dict[str, bytes] = {}

    def put(name: str, body: bytes, content_type: str) -> str:
        written[name] = body
        return f"reports/b/{name}"

    build_contact_sheet("b", summary, entries, lambda key: one, put)
    parsed = _Index()
    parsed.feed(written["index.html"].decode())
    text = " ".join(t.strip() for t in parsed.text if t.strip())
    # THEN the header counts the reused image and the saving, and its card names its source
    assert "of which reused 1" in text and "saved by reuse $0.080000" in text
    assert "reused from older-batch / x-1" in text
    assert text.count("reused from") == 1
