"""Manifest v1's schema: batch settings, the item model, per-line results and the JSON Schema
files published under schemas/.

The models carry the checks that need nothing but the line itself; checks.py adds those that
need the catalogue's per-model limits or the rest of the manifest.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from imagebatch.models.bedrock_models import ModelCatalogue, load_catalogue

# SD 1.5, the self-hosted model, is trained at 512x512; used only for models the catalogue
# does not know (possible with the sagemaker backend).
SELF_HOSTED_DEFAULT_SIZE = (512, 512)
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

ITEM_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
# Images go under outputs/ only: the roles that write them (GenerateChunkFunction, the
# SageMaker execution role in template.yaml) may put objects there and nowhere else.
OUTPUT_PREFIX_ROOT = "outputs/"
OUTPUT_PREFIX_PATTERN = r"^outputs/[A-Za-z0-9!_.*'()/-]*$"
LINE_FIELD = "(line)"

# Bounds on every backend (checks.py applies them where no catalogue model's own, narrower,
# limits are checked: the endpoint, and auto batches before routing): a value past them
# would fail later, where it costs money or a batch.
# Seeds: an unsigned 32-bit integer, the widest any backend takes (Stability on Bedrock
# 0..4294967294, Titan and Nova less; the endpoint seeds torch.Generator, whose images we
# keep reproducible across backends by the same range).
SEED_MAX = 2**32 - 1
# Prompts: Bedrock's Stability models document 10,000 characters, the most any backend
# documents; the endpoint's text encoder reads its first 77 tokens, so a longer prompt only
# bloats the request and the ledger.
PROMPT_MAX_CHARS = 10_000
# Money and minutes: DynamoDB numbers hold 38 significant digits; a cap of a billion dollars
# and a deadline of a year (a Standard Step Functions execution's longest) are past any batch.
NUMBER_MAX_DIGITS = 38
MAX_COST_USD = Decimal(10**9)
DEADLINE_MAX_MINUTES = Decimal(365 * 24 * 60)

TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
TagValue = Annotated[str, StringConstraints(max_length=256)]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=50)]


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)
    line: int
    field: str
    reason: str
    item_id: str | None = None

    def __str__(self) -> str:
        item = f" (item {self.item_id!r})" if self.item_id is not None else ""
        return f"line {self.line}{item}, field {self.field!r}: {self.reason}"


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
    # Bounded so every figure derived from it (micro-dollars, holds) is a number DynamoDB
    # stores (38 digits) and a cap a real budget could mean.
    max_cost_usd: Decimal | None = Field(
        default=None,
        gt=0,
        le=MAX_COST_USD,
        max_digits=NUMBER_MAX_DIGITS,
        strict=False,
        description="Spend cap for the batch in US dollars (at most 1,000,000,000).",
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
    # Lax like money: a JSON number or string, an exact Decimal.
    deadline_minutes: Decimal | None = Field(
        default=None,
        gt=0,
        le=DEADLINE_MAX_MINUTES,
        max_digits=NUMBER_MAX_DIGITS,
        strict=False,
        description="backend auto: only backends expected to finish within this many minutes.",
    )
    reuse: bool = Field(
        default=True,
        description="false: make every image, even one an earlier batch already made.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_default_model(cls, data: Any, info: ValidationInfo) -> Any:
        # The default comes from the catalogue the caller validates against, not the shipped one;
        # a sagemaker batch's default is the model the deployed endpoint serves, when known.
        if isinstance(data, dict) and "model" not in data:
            endpoint_model = (info.context or {}).get("endpoint_model")
            if data.get("backend") == "sagemaker" and isinstance(endpoint_model, str):
                return {**data, "model": endpoint_model}
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
        # A sagemaker batch runs a self-hosted model the Bedrock catalogue does not list; so
        # may an auto batch, the model the deployed endpoint serves.
        if self.backend == "sagemaker":
            return self
        if self.model == (info.context or {}).get("endpoint_model"):
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
    reuse: bool | None = Field(
        default=None,
        description="false: make this item's images even if already made; the batch's when absent.",
    )

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
