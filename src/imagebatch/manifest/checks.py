"""Manifest v1's checks: the batch settings, each item line, and pydantic's validation errors
turned into FieldErrors a user can act on.

An item is checked in three steps: the item model (schema.py), the limits of the catalogue
model it names, and its id against the ids of the lines before it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Protocol

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from imagebatch.errors import ManifestError
from imagebatch.manifest.id_index import FirstLines
from imagebatch.manifest.schema import (
    LINE_FIELD,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    BatchSettings,
    FieldError,
    InvalidLine,
    ManifestHeader,
    ManifestItem,
    ValidItem,
)
from imagebatch.models.bedrock_models import ModelCatalogue, ModelSpec

# Pydantic's wording for a failed pattern says nothing a user can act on.
# The tags that make a batch claim to be a catalog night (catalog/products.py writes them):
# only the catalog function's own manifests, under this prefix, may carry them. The item tags
# it also writes (sku, variant, content_hash) stay free for users (the demo tags its items
# with sku): finalize's catalog hook publishes only the manifest the catalog function recorded
# for the night (catalog/nightly.py), whatever any other batch's tags say.
RESERVED_TAG_KEYS = frozenset({"catalog", "catalog_run"})
CATALOG_MANIFESTS_PREFIX = "manifests/catalogs/"


# Where the catalog function keeps a catalog's config (catalog/products.py CATALOG_PREFIX,
# CONFIG_NAME): finalize reads it to publish a night's images.
CATALOG_CONFIG_KEY = "catalogs/{name}/config.json"


def catalog_tag_reason(key: str, name: str, config_exists: Callable[[str], bool]) -> str | None:
    """Why a manifest at `key` whose batch tag `catalog` is `name` cannot be that catalog's
    night (None: it can): it must lie in that catalog's own folder, and the catalog must have
    a config for finalize to publish with. Refused at ingest, before anything is spent."""
    folder = f"{CATALOG_MANIFESTS_PREFIX}{name}/"
    if not key.startswith(folder):
        return (
            f"tag catalog {name!r} names another catalog than this manifest's folder: a "
            f"catalog's manifests lie under {folder}; nothing was spent"
        )
    config = CATALOG_CONFIG_KEY.format(name=name)
    if not config_exists(config):
        return (
            f"tag catalog {name!r} names a catalog with no {config}: there is nothing to "
            "publish its images to; nothing was spent"
        )
    return None


def reserved_tags_for(key: str) -> frozenset[str]:
    """The tag keys a manifest at `key` may not use: none under the catalog prefix."""
    return frozenset() if key.startswith(CATALOG_MANIFESTS_PREFIX) else RESERVED_TAG_KEYS


def reserved_reason(keys: set[str]) -> str:
    names = ", ".join(repr(key) for key in sorted(keys))
    return (
        f"tag key(s) {names} are reserved for the catalog function's manifests "
        f"({CATALOG_MANIFESTS_PREFIX}); rename them"
    )


PATTERN_EXPLANATIONS = {
    "id": "use 1-128 characters from A-Z a-z 0-9 . _ - (the id becomes part of an S3 key)",
    "output_prefix": (
        "start with 'outputs/' (images may be written only under outputs/) and use only "
        "A-Z a-z 0-9 and ! - _ . * ' ( ) / (S3-safe key characters)"
    ),
    "prompt": "the prompt is empty or only whitespace",
}


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


def check_settings(
    text: str,
    line: int,
    catalogue: ModelCatalogue,
    today: date,
    *,
    wrapped: bool,
    endpoint_model: str | None = None,
) -> BatchSettings:
    """The batch settings from JSON text: a `{"batch": {...}}` header line when wrapped.
    `endpoint_model`: the model a deployed SageMaker endpoint serves, if any."""
    context: dict[str, object] = {"catalogue": catalogue}
    if endpoint_model is not None:
        context["endpoint_model"] = endpoint_model
    try:
        if wrapped:
            settings = ManifestHeader.model_validate_json(text, context=context).batch
        else:
            settings = BatchSettings.model_validate_json(text, context=context)
    except ValidationError as exc:
        raise _header_error(exc, line, "batch.") from exc
    spec = catalogue.get(settings.model)
    if settings.backend != "sagemaker" and spec is not None and spec.is_retired(today):
        raise ManifestError(_retired_reason(spec), line=line, field="batch.model")
    return settings


def default_settings(catalogue: ModelCatalogue) -> BatchSettings:
    return BatchSettings.model_validate({}, context={"catalogue": catalogue})


class LineChecks:
    """Checks item lines in manifest order; remembers each id's first line to find repeats."""

    def __init__(
        self,
        settings: BatchSettings,
        catalogue: ModelCatalogue,
        today: date,
        *,
        routed: bool = False,
        reserved_tags: frozenset[str] = frozenset(),
    ) -> None:
        """`routed`: an auto batch on a stack with an endpoint; which backend makes an item
        (and so which model limits apply) is decided per item after these checks.
        `reserved_tags`: tag keys an item may not carry (reserved_tags_for the key)."""
        self._reserved_tags = reserved_tags
        self._settings = settings
        self._catalogue = catalogue
        self._today = today
        self._routed = routed
        self._context = {"catalogue": catalogue, "default_model": settings.model}
        self._seen_ids = FirstLines()

    def check_json(self, text: str, line: int) -> ValidItem | InvalidLine:
        """A JSONL item line."""
        try:
            item = ManifestItem.model_validate_json(text, context=self._context)
        except ValidationError as exc:
            item_id = _jsonl_item_id(text)
            return self._result(line, None, _field_errors(exc, line, item_id), item_id)
        return self._result(line, item, [], item.id)

    def check_fields(self, data: dict[str, object], line: int) -> ValidItem | InvalidLine:
        """An item already split into fields (a CSV row)."""
        raw_id = data.get("id")
        item_id = raw_id if isinstance(raw_id, str) else None
        try:
            item = ManifestItem.model_validate(data, context=self._context)
        except ValidationError as exc:
            return self._result(line, None, _field_errors(exc, line, item_id), item_id)
        return self._result(line, item, [], item.id)

    def _result(
        self, line: int, item: ManifestItem | None, errors: list[FieldError], item_id: str | None
    ) -> ValidItem | InvalidLine:
        if item is not None:
            errors = self._model_errors(item, line)
            reserved = self._reserved_tags & item.tags.keys()
            if reserved:
                reason = reserved_reason(set(reserved))
                errors.append(FieldError(line=line, field="tags", reason=reason, item_id=item.id))
        if item_id is not None:
            first_line = self._seen_ids.first_line(item_id, line)
            if first_line != line:
                reason = f"duplicate id {item_id!r}: first used on line {first_line}"
                errors.append(FieldError(line=line, field="id", reason=reason, item_id=item_id))
        if errors or item is None:
            return InvalidLine(line=line, errors=errors)
        return ValidItem(line=line, item=item)

    def _model_errors(self, item: ManifestItem, line: int) -> list[FieldError]:
        # The sagemaker seam: a self-hosted model has no Bedrock catalogue entry to check; an
        # auto batch's items are checked per backend when routed (backends/routing.py).
        if self._settings.backend == "sagemaker" or self._routed:
            return _backend_bound_errors(item, line)
        spec = self._catalogue.get(item.model)
        if spec is None:
            known = ", ".join(self._catalogue.model_ids)
            reason = f"unknown model {item.model!r}; known models: {known}"
            return [FieldError(line=line, field="model", reason=reason, item_id=item.id)]
        return check_item_for_model(item, spec, line=line, today=self._today)


def _backend_bound_errors(item: ManifestItem, line: int) -> list[FieldError]:
    """What no backend takes, for an item no catalogue model's limits are checked on."""
    errors: list[FieldError] = []
    for field, text in (("prompt", item.prompt), ("negative_prompt", item.negative_prompt)):
        if text is not None and len(text) > PROMPT_MAX_CHARS:
            reason = f"{field} is {len(text)} characters; at most {PROMPT_MAX_CHARS} are taken"
            errors.append(FieldError(line=line, field=field, reason=reason, item_id=item.id))
    if item.seed is not None and not 0 <= item.seed <= SEED_MAX:
        shown = _describe_input(item.seed)
        reason = f"seed {shown} is outside 0..{SEED_MAX}"
        errors.append(FieldError(line=line, field="seed", reason=reason, item_id=item.id))
    return errors


def _jsonl_item_id(text: str) -> str | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    item_id = parsed.get("id") if isinstance(parsed, dict) else None
    return item_id if isinstance(item_id, str) else None
