"""Manifest v1: read a prompt manifest (JSON Lines or CSV) one line at a time.

A manifest can be far larger than a Lambda's memory, so nothing here holds it whole: the
stream is read in bounded pieces, each line is handed to the line checks on its own and only
the set of seen item ids is kept.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from imagebatch.errors import ManifestError
from imagebatch.manifest.checks import (
    LineChecks,
    check_settings,
    default_settings,
    reserved_reason,
)
from imagebatch.manifest.schema import (
    LINE_FIELD,
    BatchSettings,
    FieldError,
    InvalidLine,
    ValidItem,
)
from imagebatch.models.bedrock_models import ModelCatalogue, load_catalogue

MAX_LINE_BYTES = 1024 * 1024
# Small enough that a Lambda never buffers much more than one line, large enough that a
# 100k-line manifest takes few read calls.
READ_CHUNK_BYTES = 64 * 1024
CSV_BATCH_MARKER = "#batch"
CSV_TAG_PREFIX = "tag."
CSV_INT_COLUMNS = frozenset({"width", "height", "seed", "steps", "count"})
CSV_FLOAT_COLUMNS = frozenset({"guidance"})
CSV_TEXT_COLUMNS = frozenset({"id", "prompt", "negative_prompt", "model"})
CSV_COLUMNS = CSV_TEXT_COLUMNS | CSV_INT_COLUMNS | CSV_FLOAT_COLUMNS
CSV_REQUIRED_COLUMNS = ("id", "prompt")
UTF8_BOM = b"\xef\xbb\xbf"


class ReadableBinary(Protocol):
    """Anything with read(n) -> bytes: an open binary file, an S3 StreamingBody."""

    def read(self, size: int, /) -> bytes: ...


class ManifestFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


FORMAT_BY_EXTENSION = {
    ".jsonl": ManifestFormat.JSONL,
    ".ndjson": ManifestFormat.JSONL,
    ".csv": ManifestFormat.CSV,
}


def format_for_key(key: str) -> ManifestFormat:
    suffix = Path(key).suffix.lower()
    fmt = FORMAT_BY_EXTENSION.get(suffix)
    if fmt is None:
        known = ", ".join(sorted(FORMAT_BY_EXTENSION))
        raise ManifestError(f"manifest {key!r} has extension {suffix or '(none)'!r}; use {known}")
    return fmt


class _RawLine(NamedTuple):
    number: int
    content: bytes | None  # None: longer than the limit, discarded unread
    size: int


def _read_lines(
    stream: ReadableBinary,
    max_line_bytes: int = MAX_LINE_BYTES,
    chunk_bytes: int = READ_CHUNK_BYTES,
) -> Iterator[_RawLine]:
    """Splits a byte stream on newlines holding at most one line plus one chunk in memory."""
    pending = b""
    number = 0
    discarded: int | None = None  # bytes of an over-long line thrown away so far
    while True:
        chunk = stream.read(chunk_bytes)
        if not chunk:
            break
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            number += 1
            yield _finish_line(number, pending[start:end], discarded, max_line_bytes)
            discarded = None
            start = end + 1
        pending = pending[start:]
        if len(pending) > max_line_bytes:
            discarded = (discarded or 0) + len(pending)
            pending = b""
    if pending or discarded is not None:
        yield _finish_line(number + 1, pending, discarded, max_line_bytes)


def _finish_line(number: int, content: bytes, discarded: int | None, limit: int) -> _RawLine:
    if number == 1 and content.startswith(UTF8_BOM):
        content = content[len(UTF8_BOM) :]
    if content.endswith(b"\r"):
        content = content[:-1]
    size = len(content) + (discarded or 0)
    if discarded is not None or size > limit:
        return _RawLine(number, None, size)
    return _RawLine(number, content, size)


def _decode_line(raw: _RawLine) -> str | FieldError:
    if raw.content is None:
        return FieldError(
            line=raw.number,
            field=LINE_FIELD,
            reason=f"line is {raw.size} bytes; the limit is {MAX_LINE_BYTES} bytes",
        )
    try:
        return raw.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return FieldError(
            line=raw.number,
            field=LINE_FIELD,
            reason=f"not valid UTF-8 at byte offset {exc.start} of the line",
        )


def _is_blank(raw: _RawLine) -> bool:
    return raw.content is not None and not raw.content.strip()


class ManifestReader:
    """One pass over a manifest: yields each item line as ValidItem or InvalidLine."""

    def __init__(
        self,
        stream: ReadableBinary,
        fmt: ManifestFormat,
        catalogue: ModelCatalogue,
        *,
        today: date | None = None,
        endpoint_model: str | None = None,
        reserved_tags: frozenset[str] = frozenset(),
    ) -> None:
        """`endpoint_model`: the model the stack's SageMaker endpoint serves, when it has one
        (a sagemaker batch's default model; an auto batch's items are then routed per item,
        their model limits checked by the router). `reserved_tags`: tag keys neither the
        header nor an item may use (checks.reserved_tags_for the manifest's key)."""
        self._catalogue = catalogue
        self._endpoint_model = endpoint_model
        self._today = today or datetime.now(UTC).date()
        self._lines = _read_lines(stream)
        self._fmt = fmt
        self._first_item_line: _RawLine | None = None
        self._csv_columns: list[str] = []
        self._started = False
        self.settings: BatchSettings
        # The line the batch settings came from (None: the manifest has no header).
        self.settings_line: int | None = None
        if fmt is ManifestFormat.JSONL:
            self.settings = self._read_jsonl_header()
        else:
            self.settings = self._read_csv_header()
        reserved = reserved_tags & self.settings.tags.keys()
        if reserved:
            raise ManifestError(
                reserved_reason(set(reserved)), line=self.settings_line, field="batch.tags"
            )
        self._checks = LineChecks(
            self.settings,
            catalogue,
            self._today,
            routed=self.settings.backend == "auto" and endpoint_model is not None,
            reserved_tags=reserved_tags,
        )

    # -- header -----------------------------------------------------------------------------

    def _read_jsonl_header(self) -> BatchSettings:
        first = next((raw for raw in self._lines if not _is_blank(raw)), None)
        if first is None:
            return default_settings(self._catalogue)
        text = _decode_line(first)
        parsed: object = None
        if isinstance(text, str):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        if isinstance(text, str) and isinstance(parsed, dict) and list(parsed) == ["batch"]:
            if not isinstance(parsed["batch"], dict):
                raise ManifestError(
                    "the batch header must be a JSON object", line=first.number, field="batch"
                )
            self.settings_line = first.number
            return check_settings(
                text,
                first.number,
                self._catalogue,
                self._today,
                wrapped=True,
                endpoint_model=self._endpoint_model,
            )
        self._first_item_line = first
        return default_settings(self._catalogue)

    def _read_csv_header(self) -> BatchSettings:
        merged: dict[str, Any] = {}
        first_batch_line: int | None = None
        for raw in self._lines:
            if _is_blank(raw):
                continue
            text = _decode_line(raw)
            if isinstance(text, FieldError):
                raise ManifestError(text.reason, line=text.line, field=text.field)
            if not text.startswith(CSV_BATCH_MARKER):
                self._csv_columns = _parse_csv_columns(text, raw.number)
                break
            first_batch_line = first_batch_line or raw.number
            _merge_batch_line(merged, text, raw.number)
        else:
            raise ManifestError("manifest has no items: there is no CSV header row")
        if first_batch_line is None:
            return default_settings(self._catalogue)
        self.settings_line = first_batch_line
        return check_settings(
            json.dumps(merged),
            first_batch_line,
            self._catalogue,
            self._today,
            wrapped=False,
            endpoint_model=self._endpoint_model,
        )

    # -- items ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ValidItem | InvalidLine]:
        if self._started:
            raise RuntimeError("a ManifestReader reads its stream once")
        self._started = True
        item_lines = 0
        rows = self._jsonl_results() if self._fmt is ManifestFormat.JSONL else self._csv_results()
        for result in rows:
            item_lines += 1
            yield result
        if item_lines == 0:
            raise ManifestError("manifest has no items")

    def _jsonl_results(self) -> Iterator[ValidItem | InvalidLine]:
        if self._first_item_line is not None:
            yield self._jsonl_line(self._first_item_line)
        for raw in self._lines:
            if not _is_blank(raw):
                yield self._jsonl_line(raw)

    def _jsonl_line(self, raw: _RawLine) -> ValidItem | InvalidLine:
        text = _decode_line(raw)
        if isinstance(text, FieldError):
            return InvalidLine(line=raw.number, errors=[text])
        return self._checks.check_json(text, raw.number)

    def _csv_results(self) -> Iterator[ValidItem | InvalidLine]:
        feed = _CsvLineFeed(self._lines)
        reader = csv.reader(feed, strict=True)
        while True:
            feed.row_start = None
            try:
                row = next(reader)
            except StopIteration:
                yield from feed.take_set_aside()
                return
            except csv.Error as exc:
                yield from feed.take_set_aside()
                line = feed.row_start or feed.last_line
                error = FieldError(
                    line=line, field=LINE_FIELD, reason=f"not a valid CSV row: {exc}"
                )
                yield InvalidLine(line=line, errors=[error])
                continue
            yield from feed.take_set_aside()
            if any(cell.strip() for cell in row):
                yield self._csv_row(row, feed.row_start or feed.last_line)

    def _csv_row(self, row: list[str], line: int) -> ValidItem | InvalidLine:
        if len(row) != len(self._csv_columns):
            reason = f"row has {len(row)} cells; the header row has {len(self._csv_columns)}"
            error = FieldError(line=line, field=LINE_FIELD, reason=reason)
            return InvalidLine(line=line, errors=[error])
        return self._checks.check_fields(_csv_row_data(self._csv_columns, row), line)


def _merge_batch_line(merged: dict[str, Any], text: str, line: int) -> None:
    body = text[len(CSV_BATCH_MARKER) :]
    try:
        settings = json.loads(body) if body[:1].isspace() else None
    except ValueError as exc:
        raise ManifestError(f"#batch line is not valid JSON: {exc}", line=line) from exc
    if not isinstance(settings, dict):
        raise ManifestError("write '#batch ' then a JSON object on the same line", line=line)
    for key, value in settings.items():
        if key in merged:
            raise ManifestError("set twice in #batch lines", line=line, field=f"batch.{key}")
        merged[key] = value


def _parse_csv_columns(text: str, line: int) -> list[str]:
    columns = [name.strip() for name in next(csv.reader([text]))]
    seen: set[str] = set()
    for name in columns:
        is_tag = name.startswith(CSV_TAG_PREFIX) and len(name) > len(CSV_TAG_PREFIX)
        if name not in CSV_COLUMNS and not is_tag:
            known = ", ".join(sorted(CSV_COLUMNS))
            raise ManifestError(
                f"unknown column; known columns: {known}, {CSV_TAG_PREFIX}<key>",
                line=line,
                field=name,
            )
        if name in seen:
            raise ManifestError("column appears twice", line=line, field=name)
        seen.add(name)
    for required in CSV_REQUIRED_COLUMNS:
        if required not in seen:
            raise ManifestError("the header row lacks this column", line=line, field=required)
    return columns


def _csv_cell_value(column: str, cell: str) -> object:
    # A cell that does not parse stays text, so strict validation names the field and value.
    try:
        if column in CSV_INT_COLUMNS:
            return int(cell)
        if column in CSV_FLOAT_COLUMNS:
            return float(cell)
    except ValueError:
        return cell
    return cell


def _csv_row_data(columns: list[str], row: list[str]) -> dict[str, object]:
    data: dict[str, object] = {}
    tags: dict[str, str] = {}
    for column, cell in zip(columns, row, strict=True):
        if cell == "":
            continue
        if column.startswith(CSV_TAG_PREFIX):
            tags[column[len(CSV_TAG_PREFIX) :]] = cell
        else:
            data[column] = _csv_cell_value(column, cell)
    if tags:
        data["tags"] = tags
    return data


class _CsvLineFeed:
    """Feeds decoded lines to csv.reader, setting aside lines that cannot be decoded."""

    def __init__(self, lines: Iterator[_RawLine]) -> None:
        self._lines = lines
        self.row_start: int | None = None
        self.last_line = 0
        self._set_aside: list[InvalidLine] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            raw = next(self._lines)
            self.last_line = raw.number
            text = _decode_line(raw)
            if isinstance(text, FieldError):
                self._set_aside.append(InvalidLine(line=raw.number, errors=[text]))
                continue
            if self.row_start is None:
                self.row_start = raw.number
            # csv.reader needs the line end to keep newlines inside quoted cells.
            return text + "\n"

    def take_set_aside(self) -> Iterator[InvalidLine]:
        pending, self._set_aside = self._set_aside, []
        yield from pending


def validate_manifest_file(
    path: Path, catalogue: ModelCatalogue | None = None
) -> tuple[BatchSettings, int, list[FieldError]]:
    """Validates a manifest on disk: its settings, how many items are valid, every error."""
    fmt = format_for_key(path.name)
    valid_items = 0
    errors: list[FieldError] = []
    with path.open("rb") as stream:
        reader = ManifestReader(stream, fmt, catalogue or load_catalogue())
        for result in reader:
            if isinstance(result, ValidItem):
                valid_items += 1
            else:
                errors.extend(result.errors)
    return reader.settings, valid_items, errors
