"""Manifest v1: read and validate a prompt manifest (JSON Lines or CSV) one line at a time.

A manifest can be far larger than a Lambda's memory, so nothing here holds it whole: the
stream is read in bounded pieces, each line is validated on its own and only the set of seen
item ids is kept.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from imagebatch.errors import ManifestError
from imagebatch.models.bedrock_models import ModelCatalogue, ModelSpec, load_catalogue

MAX_LINE_BYTES = 1024 * 1024
# Small enough that a Lambda never buffers much more than one line, large enough that a
# 100k-line manifest takes few read calls.
READ_CHUNK_BYTES = 64 * 1024
# SD 1.5, the self-hosted model, is trained at 512x512; used only for models the catalogue
# does not know (possible with the sagemaker backend).
SELF_HOSTED_DEFAULT_SIZE = (512, 512)
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

ITEM_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
# Images go under outputs/ only: the roles that write them (GenerateChunkFunction, the
# SageMaker execution role in template.yaml) may put objects there and nowhere else.
OUTPUT_PREFIX_ROOT = "outputs/"
OUTPUT_PREFIX_PATTERN = r"^outputs/[A-Za-z0-9!_.*'()/-]*$"
CSV_BATCH_MARKER = "#batch"
CSV_TAG_PREFIX = "tag."
CSV_INT_COLUMNS = frozenset({"width", "height", "seed", "steps", "count"})
CSV_FLOAT_COLUMNS = frozenset({"guidance"})
CSV_TEXT_COLUMNS = frozenset({"id", "prompt", "negative_prompt", "model"})
CSV_COLUMNS = CSV_TEXT_COLUMNS | CSV_INT_COLUMNS | CSV_FLOAT_COLUMNS
CSV_REQUIRED_COLUMNS = ("id", "prompt")
UTF8_BOM = b"\xef\xbb\xbf"
LINE_FIELD = "(line)"

# Pydantic's wording for a failed pattern says nothing a user can act on.
PATTERN_EXPLANATIONS = {
    "id": "use 1-128 characters from A-Z a-z 0-9 . _ - (the id becomes part of an S3 key)",
    "output_prefix": (
        "start with 'outputs/' (images may be written only under outputs/) and use only "
        "A-Z a-z 0-9 and ! - _ . * ' ( ) / (S3-safe key characters)"
    ),
    "prompt": "the prompt is empty or only whitespace",
}

TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
TagValue = Annotated[str, StringConstraints(max_length=256)]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=50)]


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


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)
    line: int
    field: str
    reason: str
    item_id: str | None = None

    def __str__(self) -> str:
        item = f" (item {self.item_id!r})" if self.item_id is not None else ""
        return f"line {self.line}{item}, field {self.field!r}: {self.reason}"


def format_for_key(key: str) -> ManifestFormat:
    suffix = Path(key).suffix.lower()
    fmt = FORMAT_BY_EXTENSION.get(suffix)
    if fmt is None:
        known = ", ".join(sorted(FORMAT_BY_EXTENSION))
        raise ManifestError(f"manifest {key!r} has extension {suffix or '(none)'!r}; use {known}")
    return fmt


def _context_catalogue(info: ValidationInfo) -> ModelCatalogue:
    context = info.context or {}
    catalogue = context.get("catalogue")
    return catalogue if isinstance(catalogue, ModelCatalogue) else load_catalogue()


def _catalogue_default_model_id() -> str:
    return load_catalogue().default_model_id


def _default_size_for(model_id: object, catalogue: ModelCatalogue) -> tuple[int, int]:
    spec = catalogue.get(model_id) if isinstance(model_id, str) else None
    if spec is None or not spec.sizes:
        return SELF_HOSTED_DEFAULT_SIZE
    return spec.sizes[0].width, spec.sizes[0].height


def _default_width() -> int:
    return _default_size_for(_catalogue_default_model_id(), load_catalogue())[0]


def _default_height() -> int:
    return _default_size_for(_catalogue_default_model_id(), load_catalogue())[1]


class BatchSettings(BaseModel):
    """Settings for the whole batch: the JSONL header line's `batch` object or CSV `#batch`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    backend: Literal["bedrock", "sagemaker", "auto"] = Field(
        default="auto", description="Where images are made; auto picks by batch size and cost."
    )
    model: str = Field(
        default_factory=_catalogue_default_model_id,
        min_length=1,
        description="Default model id for items that name none; the catalogue's first model.",
    )
    # Money arrives as a JSON number or string; lax here so both become an exact Decimal.
    max_cost_usd: Decimal | None = Field(
        default=None, gt=0, strict=False, description="Spend cap for the batch in US dollars."
    )
    output_prefix: str = Field(
        default=OUTPUT_PREFIX_ROOT,
        min_length=1,
        max_length=512,
        pattern=OUTPUT_PREFIX_PATTERN,
        description="S3 key prefix for images: starts with 'outputs/', ends in '/', no '..'.",
    )
    tags: Tags = Field(default_factory=dict, description="Up to 50 batch tags.")
    on_invalid: Literal["skip", "reject"] = Field(
        default="reject",
        description="reject: any invalid line rejects the batch; skip: invalid lines are left out.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_default_model(cls, data: Any, info: ValidationInfo) -> Any:
        # The default comes from the catalogue the caller validates against, not the shipped one.
        if isinstance(data, dict) and "model" not in data:
            return {**data, "model": _context_catalogue(info).default_model_id}
        return data

    @field_validator("output_prefix")
    @classmethod
    def _check_output_prefix(cls, prefix: str) -> str:
        if prefix.startswith("/"):
            raise ValueError("must not start with '/'")
        if not prefix.endswith("/"):
            raise ValueError("must end with '/'")
        if ".." in prefix:
            raise ValueError("must not contain '..'")
        return prefix

    @model_validator(mode="after")
    def _check_model_known(self, info: ValidationInfo) -> BatchSettings:
        # A sagemaker batch runs a self-hosted model the Bedrock catalogue does not list.
        if self.backend == "sagemaker":
            return self
        catalogue = _context_catalogue(info)
        if catalogue.get(self.model) is None:
            raise PydanticCustomError(
                "unknown_model",
                "unknown model '{model_id}'; known models: {known}",
                {"field": "model", "model_id": self.model, "known": ", ".join(catalogue.model_ids)},
            )
        return self


class ManifestHeader(BaseModel):
    """The optional first JSONL line: an object whose only key is `batch`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    batch: BatchSettings


class ManifestItem(BaseModel):
    """One manifest line: a prompt and how many images to make from it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    id: str = Field(
        min_length=1,
        max_length=128,
        pattern=ITEM_ID_PATTERN,
        description="Unique in the manifest; part of the output S3 key.",
    )
    prompt: str = Field(min_length=1, pattern=r"\S", description="Text prompt, not blank.")
    negative_prompt: str | None = Field(default=None, description="What to keep out.")
    width: int = Field(
        default_factory=_default_width,
        ge=64,
        le=4096,
        multiple_of=8,
        description="Pixels; give with height or neither (then the model's first size).",
    )
    height: int = Field(
        default_factory=_default_height,
        ge=64,
        le=4096,
        multiple_of=8,
        description="Pixels; give with width or neither (then the model's first size).",
    )
    seed: int | None = Field(default=None, description="Fixed seed; random when absent.")
    steps: int | None = Field(default=None, ge=1, le=150, description="Diffusion steps.")
    guidance: float | None = Field(
        default=None, ge=0, le=35, allow_inf_nan=False, description="Guidance (CFG) scale."
    )
    count: int = Field(default=1, ge=1, le=10, description="Images to make from this item.")
    model: str = Field(
        default_factory=_catalogue_default_model_id,
        min_length=1,
        description="Model id; the batch model when absent.",
    )
    tags: Tags = Field(default_factory=dict, description="Up to 50 item tags.")

    @model_validator(mode="before")
    @classmethod
    def _resolve_model_and_size(cls, data: Any, info: ValidationInfo) -> Any:
        # Resolved here so every consumer sees a concrete model and size, never None.
        if not isinstance(data, dict):
            return data
        resolved = dict(data)
        if "model" not in resolved:
            context = info.context or {}
            default_model = context.get("default_model")
            resolved["model"] = (
                default_model
                if isinstance(default_model, str)
                else _context_catalogue(info).default_model_id
            )
        has_width, has_height = "width" in resolved, "height" in resolved
        if has_width != has_height:
            given, missing = ("width", "height") if has_width else ("height", "width")
            raise PydanticCustomError(
                "size_pair",
                "{given} is given without {missing}: give both or neither",
                {"field": missing, "given": given, "missing": missing},
            )
        if not has_width:
            width, height = _default_size_for(resolved["model"], _context_catalogue(info))
            resolved["width"], resolved["height"] = width, height
        return resolved


class ValidItem(BaseModel):
    line: int
    item: ManifestItem


class InvalidLine(BaseModel):
    line: int
    errors: list[FieldError]


def check_item_for_model(
    item: ManifestItem, spec: ModelSpec, *, line: int = 0, today: date | None = None
) -> list[FieldError]:
    """Checks an item that passed the generic checks against one catalogue model's limits."""
    today = today or datetime.now(UTC).date()
    limits = spec.limits

    def error(field: str, reason: str) -> FieldError:
        return FieldError(line=line, field=field, reason=reason, item_id=item.id)

    errors: list[FieldError] = []
    if spec.is_retired(today):
        errors.append(error("model", _retired_reason(spec)))
    if spec.size(item.width, item.height) is None:
        allowed = spec.describe_sizes()
        errors.append(
            error(
                "width",
                f"size {item.width}x{item.height} is not offered by {spec.model_id}; "
                f"allowed: {allowed}",
            )
        )
    errors.extend(_text_length_errors(item, spec, error))
    if item.seed is not None and not limits.seed_min <= item.seed <= limits.seed_max:
        errors.append(
            error(
                "seed",
                f"seed {item.seed} is outside {limits.seed_min}..{limits.seed_max} "
                f"for {spec.model_id}",
            )
        )
    if item.steps is not None and not limits.takes_steps:
        errors.append(error("steps", f"{spec.model_id} does not take steps; leave it out"))
    if item.guidance is not None and not limits.takes_guidance:
        errors.append(error("guidance", f"{spec.model_id} does not take guidance; leave it out"))
    elif item.guidance is not None:
        low = limits.guidance_min if limits.guidance_min is not None else item.guidance
        high = limits.guidance_max if limits.guidance_max is not None else item.guidance
        if not low <= item.guidance <= high:
            errors.append(
                error(
                    "guidance",
                    f"guidance {item.guidance:g} is outside {low:g}..{high:g} for {spec.model_id}",
                )
            )
    return errors


def _retired_reason(spec: ModelSpec) -> str:
    replacement = spec.lifecycle.replacement
    advice = f"use {replacement}" if replacement else "choose another model"
    return f"{spec.model_id} reached end of life on {spec.lifecycle.end_of_life}; {advice}"


class _ErrorFactory(Protocol):
    def __call__(self, field: str, reason: str, /) -> FieldError: ...


def _text_length_errors(
    item: ManifestItem, spec: ModelSpec, error: _ErrorFactory
) -> list[FieldError]:
    errors = []
    texts = (
        ("prompt", item.prompt, spec.limits.prompt_max_chars),
        ("negative_prompt", item.negative_prompt, spec.limits.negative_prompt_max_chars),
    )
    for field, text, limit in texts:
        if text is not None and len(text) > limit:
            errors.append(
                error(
                    field,
                    f"{field} is {len(text)} characters; {spec.model_id} takes at most {limit}",
                )
            )
    return errors


def _describe_input(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _field_errors(exc: ValidationError, line: int, item_id: str | None) -> list[FieldError]:
    errors = []
    for detail in exc.errors(include_url=False):
        loc = [str(part) for part in detail["loc"]]
        reason = _reason(detail, ".".join(loc))
        if loc[-1:] == ["[key]"]:
            # A bad dict key: name the dict, and say which key in the reason.
            reason = f"key {loc[-2]!r}: {reason}"
            loc = loc[:-2]
        context = detail.get("ctx") or {}
        if "field" in context:
            # Raised by a whole-model check; it says which field it is about.
            loc.append(str(context["field"]))
        field = ".".join(loc) or LINE_FIELD
        errors.append(FieldError(line=line, field=field, reason=reason, item_id=item_id))
    return errors


def _reason(detail: ErrorDetails, field: str) -> str:
    kind = detail["type"]
    context = detail.get("ctx") or {}
    fixed = {
        "extra_forbidden": f"unknown field {field!r}",
        "missing": f"required field {field!r} is missing",
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "json_invalid":
        return f"not valid JSON: {context.get('error')}"
    if kind in {"model_type", "model_attributes_type"}:
        return f"expected a JSON object, got {_describe_input(detail['input'])}"
    if kind == "string_pattern_mismatch":
        return PATTERN_EXPLANATIONS.get(field.rsplit(".", maxsplit=1)[-1], detail["msg"])
    if kind in {"unknown_model", "size_pair"}:
        return detail["msg"]
    return f"{detail['msg']} (got {_describe_input(detail['input'])})"


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


def _header_error(exc: ValidationError, line: int, prefix: str) -> ManifestError:
    errors = _field_errors(exc, line, None)
    fields = [e.field if e.field.startswith(prefix) else f"{prefix}{e.field}" for e in errors]
    # The first field is the one named; the rest still appear so one fix round is enough.
    others = "".join(
        f"; {field}: {e.reason}" for field, e in zip(fields[1:], errors[1:], strict=True)
    )
    return ManifestError(
        f"bad batch header: {errors[0].reason}{others}", line=line, field=fields[0]
    )


class ManifestReader:
    """One pass over a manifest: yields each item line as ValidItem or InvalidLine."""

    def __init__(
        self,
        stream: ReadableBinary,
        fmt: ManifestFormat,
        catalogue: ModelCatalogue,
        *,
        today: date | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._today = today or datetime.now(UTC).date()
        self._lines = _read_lines(stream)
        self._fmt = fmt
        self._first_item_line: _RawLine | None = None
        self._csv_columns: list[str] = []
        self._started = False
        self._seen_ids: dict[str, int] = {}
        self.settings: BatchSettings
        if fmt is ManifestFormat.JSONL:
            self.settings = self._read_jsonl_header()
        else:
            self.settings = self._read_csv_header()
        self._item_context = {"catalogue": catalogue, "default_model": self.settings.model}

    # -- header -----------------------------------------------------------------------------

    def _validate_settings(self, text: str, line: int, *, wrapped: bool) -> BatchSettings:
        context = {"catalogue": self._catalogue}
        try:
            if wrapped:
                settings = ManifestHeader.model_validate_json(text, context=context).batch
            else:
                settings = BatchSettings.model_validate_json(text, context=context)
        except ValidationError as exc:
            raise _header_error(exc, line, "batch.") from exc
        spec = self._catalogue.get(settings.model)
        if settings.backend != "sagemaker" and spec is not None and spec.is_retired(self._today):
            raise ManifestError(_retired_reason(spec), line=line, field="batch.model")
        return settings

    def _default_settings(self) -> BatchSettings:
        return BatchSettings.model_validate({}, context={"catalogue": self._catalogue})

    def _read_jsonl_header(self) -> BatchSettings:
        first = next((raw for raw in self._lines if not _is_blank(raw)), None)
        if first is None:
            return self._default_settings()
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
            return self._validate_settings(text, first.number, wrapped=True)
        self._first_item_line = first
        return self._default_settings()

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
                self._csv_columns = self._parse_csv_columns(text, raw.number)
                break
            first_batch_line = first_batch_line or raw.number
            self._merge_batch_line(merged, text, raw.number)
        else:
            raise ManifestError("manifest has no items: there is no CSV header row")
        if first_batch_line is None:
            return self._default_settings()
        return self._validate_settings(json.dumps(merged), first_batch_line, wrapped=False)

    @staticmethod
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

    @staticmethod
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
        try:
            item = ManifestItem.model_validate_json(text, context=self._item_context)
        except ValidationError as exc:
            item_id = _jsonl_item_id(text)
            return self._result(raw.number, None, _field_errors(exc, raw.number, item_id), item_id)
        return self._result(raw.number, item, [], item.id)

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
        data = _csv_row_data(self._csv_columns, row)
        raw_id = data.get("id")
        item_id = raw_id if isinstance(raw_id, str) else None
        try:
            item = ManifestItem.model_validate(data, context=self._item_context)
        except ValidationError as exc:
            return self._result(line, None, _field_errors(exc, line, item_id), item_id)
        return self._result(line, item, [], item.id)

    def _result(
        self, line: int, item: ManifestItem | None, errors: list[FieldError], item_id: str | None
    ) -> ValidItem | InvalidLine:
        if item is not None:
            errors = self._model_errors(item, line)
        if item_id is not None:
            first_line = self._seen_ids.setdefault(item_id, line)
            if first_line != line:
                reason = f"duplicate id {item_id!r}: first used on line {first_line}"
                errors.append(FieldError(line=line, field="id", reason=reason, item_id=item_id))
        if errors or item is None:
            return InvalidLine(line=line, errors=errors)
        return ValidItem(line=line, item=item)

    def _model_errors(self, item: ManifestItem, line: int) -> list[FieldError]:
        # The sagemaker seam: a self-hosted model has no Bedrock catalogue entry to check.
        if self.settings.backend == "sagemaker":
            return []
        spec = self._catalogue.get(item.model)
        if spec is None:
            known = ", ".join(self._catalogue.model_ids)
            reason = f"unknown model {item.model!r}; known models: {known}"
            return [FieldError(line=line, field="model", reason=reason, item_id=item.id)]
        return check_item_for_model(item, spec, line=line, today=self._today)


def _jsonl_item_id(text: str) -> str | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    item_id = parsed.get("id") if isinstance(parsed, dict) else None
    return item_id if isinstance(item_id, str) else None


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


def manifest_json_schema() -> dict[str, Any]:
    return {"$schema": SCHEMA_DIALECT, **ManifestItem.model_json_schema()}


def header_json_schema() -> dict[str, Any]:
    return {"$schema": SCHEMA_DIALECT, **ManifestHeader.model_json_schema()}


SCHEMA_FILES = {
    "manifest-v1.schema.json": manifest_json_schema,
    "manifest-header-v1.schema.json": header_json_schema,
}


def schema_file_text(name: str) -> str:
    """The exact text committed under schemas/, so a test can tell when it drifts."""
    return json.dumps(SCHEMA_FILES[name](), indent=2, sort_keys=True) + "\n"


def write_json_schemas(directory: Path) -> list[Path]:
    written = []
    for name in SCHEMA_FILES:
        target = directory / name
        target.write_text(schema_file_text(name), encoding="utf-8")
        written.append(target)
    return written
