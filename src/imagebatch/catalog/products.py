"""Scheduled catalog runs: products in, a manifest of only the variants that changed out.

A catalog lives under `catalogs/<name>/` in the data bucket: `config.json` (a CatalogConfig)
and the products file it names (CSV with a header row, or JSON Lines; `sku` plus any
attributes). Each night the catalog Lambda renders every product variant's prompt, takes the
identity of the image it would be (models/identity.py: the same identity chunks reuse images
by, docs/reuse.md) and writes a manifest of the variants whose identity differs from the one
recorded when that variant's image last succeeded. The manifest then takes the normal path
(validation, budget, ledger, reuse: a variant changed back to an image any batch made is
copied at no inference); finalize records the new identities and the stable "latest" keys.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imagebatch.backends.bedrock import bedrock_identity
from imagebatch.errors import CatalogError
from imagebatch.manifest.checks import CATALOG_MANIFESTS_PREFIX
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.identity import image_identity
from imagebatch.models.records import ImageJob, hashed_seed

CATALOG_PREFIX = "catalogs/"
CONFIG_NAME = "config.json"
CATALOG_TAG = "catalog"
RUN_TAG = "catalog_run"
SKU_TAG = "sku"
VARIANT_TAG = "variant"
IDENTITY_TAG = "identity_sha256"
# Bedrock's Stability and Amazon models share this lower bound of seed ranges' upper ends.
_SEED_MAX = 2_147_483_646
_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
_SKU = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PromptTemplate(str):
    """A prompt template: literal text and `{field}` placeholders, nothing else.

    Sandboxed by construction: no attribute or index access, no conversions or format specs,
    no expressions — a product's values are only ever pasted in as text.
    """

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _, name, _, _ in string.Formatter().parse(self) if name is not None)

    @classmethod
    def checked(cls, text: str) -> PromptTemplate:
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ValueError(f"bad braces in template {text!r}: {exc}") from None
        for _, name, spec, conversion in parts:
            if name is None:
                continue
            if not _FIELD.match(name) or spec or conversion:
                raise ValueError(
                    f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}} is not allowed: use {{field_name}} only"
                )
        return cls(text)

    def render(self, values: Mapping[str, str]) -> str:
        missing = [name for name in self.fields if not values.get(name, "").strip()]
        if missing:
            raise KeyError(", ".join(dict.fromkeys(missing)))
        return "".join(
            literal + (values[name] if name is not None else "")
            for literal, name, _, _ in string.Formatter().parse(self)
        )


class Variant(BaseModel):
    """One image per product: an angle, a background, an aspect ratio."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    prompt_template: str | None = Field(
        default=None, description="Overrides the catalog's prompt_template for this variant."
    )
    negative_prompt: str | None = None
    width: int = 1024
    height: int = 1024
    seed: int | None = Field(default=None, ge=0, le=_SEED_MAX)

    @field_validator("prompt_template", "negative_prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else PromptTemplate.checked(value)


class CatalogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=_NAME, description="Catalog name: lower-case, digits, dashes.")
    products: str = Field(
        default="products.csv",
        pattern=r"^[A-Za-z0-9._/-]+\.(csv|jsonl)$",
        description="Products file, relative to catalogs/<name>/.",
    )
    prompt_template: str = Field(min_length=1)
    negative_prompt: str | None = None
    variants: tuple[Variant, ...] = Field(min_length=1, max_length=20)
    model: str
    backend: Literal["bedrock", "sagemaker", "auto"] = "bedrock"
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="Hard cap for one night's batch, in US dollars."
    )

    @field_validator("prompt_template", "negative_prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else PromptTemplate.checked(value)

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique; repeated: {duplicates}")
        return value

    @property
    def prefix(self) -> str:
        return f"{CATALOG_PREFIX}{self.name}/"

    @property
    def products_key(self) -> str:
        return f"{self.prefix}{self.products}"

    def latest_key(self, sku: str, variant: str) -> str:
        """Stable per product variant, for a storefront to link; history stays per batch."""
        return f"{self.prefix}latest/{sku}/{variant}.png"

    @classmethod
    def parse(cls, text: str | bytes, source: str) -> CatalogConfig:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or '(config)'}: {error['msg']}"
                for error in exc.errors()
            )
            raise CatalogError(f"{source}: {problems}") from None


class ProductError(BaseModel):
    """One product (or one of its variants) that could not be rendered; the rest still run."""

    line: int
    sku: str | None
    variant: str | None = None
    field: str
    reason: str


@dataclass(frozen=True)
class Product:
    line: int
    sku: str
    values: dict[str, str]


def read_products(stream: BinaryIO, key: str) -> Iterator[Product | ProductError]:
    """Stream products from CSV (header row) or JSON Lines; a bad row is an error, not a stop."""
    text = codecs.getreader("utf-8-sig")(stream, "strict")
    if key.endswith(".csv"):
        rows: Iterable[tuple[int, dict[str, Any] | ProductError]] = _csv_rows(text)
    else:
        rows = _jsonl_rows(text)
    seen: set[str] = set()
    for line, row in rows:
        if isinstance(row, ProductError):
            yield row
            continue
        sku = str(row.get("sku") or "").strip()
        if not _SKU.match(sku):
            yield ProductError(
                line=line,
                sku=sku or None,
                field="sku",
                reason="missing" if not sku else "must be 1-100 of A-Z a-z 0-9 . _ -",
            )
            continue
        if sku in seen:
            yield ProductError(line=line, sku=sku, field="sku", reason="duplicate sku")
            continue
        seen.add(sku)
        values = {str(k): "" if v is None else str(v).strip() for k, v in row.items()}
        yield Product(line=line, sku=sku, values=values)


def _csv_rows(text: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | ProductError]]:
    reader = csv.DictReader(text)
    for row in reader:
        if None in row:
            yield (
                reader.line_num,
                ProductError(
                    line=reader.line_num,
                    sku=row.get("sku"),
                    field="(row)",
                    reason="more cells than header columns",
                ),
            )
            continue
        yield reader.line_num, row


def _jsonl_rows(text: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | ProductError]]:
    for line, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield line, ProductError(line=line, sku=None, field="(line)", reason=f"not JSON: {exc}")
            continue
        if not isinstance(row, dict):
            yield (
                line,
                ProductError(
                    line=line, sku=None, field="(line)", reason="a product must be a JSON object"
                ),
            )
            continue
        yield line, row


class RenderedVariant(BaseModel):
    sku: str
    variant: str
    prompt: str
    negative_prompt: str | None
    model: str
    width: int
    height: int
    seed: int
    # The identity of the image the variant's manifest line makes (models/identity.py).
    identity_sha256: str

    @property
    def item_id(self) -> str:
        return f"{self.sku}.{self.variant}"


def render_variant(
    config: CatalogConfig, product: Product, variant: Variant
) -> RenderedVariant | ProductError:
    template = PromptTemplate(variant.prompt_template or config.prompt_template)
    negative = variant.negative_prompt or config.negative_prompt
    try:
        prompt = template.render(product.values)
        negative_prompt = PromptTemplate(negative).render(product.values) if negative else None
    except KeyError as exc:
        return ProductError(
            line=product.line,
            sku=product.sku,
            variant=variant.name,
            field=str(exc.args[0]),
            reason="the prompt template uses this field and the product has no value for it",
        )
    seed = variant.seed if variant.seed is not None else stable_seed(config.name, product.sku)
    what = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "model": config.model,
        "width": variant.width,
        "height": variant.height,
        "seed": seed,
        "variant": variant.name,
    }
    job = ImageJob(
        image_id=f"{product.sku}.{variant.name}-1",
        item_id=f"{product.sku}.{variant.name}",
        index=1,
        line=product.line,
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=variant.width,
        height=variant.height,
        seed=seed,
        model=config.model,
    )
    return RenderedVariant(sku=product.sku, identity_sha256=_identity(job), **what)


def _identity(job: ImageJob) -> str:
    """The job's identity on Bedrock, as a chunk takes it; for a model the catalogue does not
    know (ingest will refuse its lines) one that still changes with every input."""
    spec = load_catalogue().get(job.model)
    if spec is not None:
        return bedrock_identity(job, spec)
    return image_identity(
        job,
        backend="bedrock",
        backend_model={"model_id": job.model},
        request_family="unknown",
        family_version=0,
    )


def stable_seed(catalog: str, sku: str) -> int:
    """Same product, same seed, every night: an unchanged prompt makes the same picture.

    Shared by a product's variants so its angles look like one product.
    """
    # Written into the night's manifest as an explicit seed, so it must be one every model
    # accepts: the smallest seed range in the catalogue (Amazon models: up to 2,147,483,646).
    return hashed_seed(catalog, sku, maximum=_SEED_MAX)


@dataclass
class CatalogPlan:
    """What one scheduled run decided: what to make, what is unchanged, what is broken."""

    changed: list[RenderedVariant] = field(default_factory=list)
    unchanged: int = 0
    errors: list[ProductError] = field(default_factory=list)
    products: int = 0


def plan_catalog_run(
    config: CatalogConfig,
    products: Iterable[Product | ProductError],
    recorded_identities: Mapping[tuple[str, str], str],
) -> CatalogPlan:
    """Every product variant whose image identity differs from its last successful one's."""
    plan = CatalogPlan()
    for product in products:
        if isinstance(product, ProductError):
            plan.errors.append(product)
            continue
        plan.products += 1
        for variant in config.variants:
            rendered = render_variant(config, product, variant)
            if isinstance(rendered, ProductError):
                plan.errors.append(rendered)
            elif (
                recorded_identities.get((rendered.sku, rendered.variant))
                == rendered.identity_sha256
            ):
                plan.unchanged += 1
            else:
                plan.changed.append(rendered)
    return plan


def manifest_lines(config: CatalogConfig, plan: CatalogPlan, run: str) -> Iterator[str]:
    """The run's manifest: a batch header, then one item per changed variant."""
    batch: dict[str, Any] = {
        "backend": config.backend,
        "model": config.model,
        "on_invalid": "skip",
        "tags": {CATALOG_TAG: config.name, RUN_TAG: run},
    }
    if config.max_cost_usd is not None:
        batch["max_cost_usd"] = config.max_cost_usd
    yield json.dumps({"batch": batch})
    for variant in plan.changed:
        item: dict[str, Any] = {
            "id": variant.item_id,
            "prompt": variant.prompt,
            "width": variant.width,
            "height": variant.height,
            "seed": variant.seed,
            "tags": {
                SKU_TAG: variant.sku,
                VARIANT_TAG: variant.variant,
                IDENTITY_TAG: variant.identity_sha256,
            },
        }
        if variant.negative_prompt:
            item["negative_prompt"] = variant.negative_prompt
        yield json.dumps(item)


def manifest_key(config: CatalogConfig, run: str) -> str:
    """One key per catalog and night: the same night re-rendered is the same upload."""
    night = re.sub(r"[^0-9A-Za-z]+", "-", run).strip("-")
    return f"{CATALOG_MANIFESTS_PREFIX}{config.name}/{night}.jsonl"
