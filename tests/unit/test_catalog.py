"""Catalog rendering: sandboxed templates, per-product errors, content hashes, the manifest."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from imagebatch.catalog.products import (
    CatalogConfig,
    Product,
    ProductError,
    PromptTemplate,
    manifest_key,
    manifest_lines,
    plan_catalog_run,
    read_products,
    stable_seed,
)
from imagebatch.errors import CatalogError
from imagebatch.manifest.reader import validate_manifest_file
from imagebatch.models.bedrock_models import load_catalogue

MODEL = "stability.sd3-5-large-v1:0"
SAMPLE = Path(__file__).resolve().parents[2] / "events" / "catalog"


def config(**overrides: object) -> CatalogConfig:
    data: dict[str, object] = {
        "name": "shop",
        "prompt_template": "Photo of a {color} {name}",
        "model": MODEL,
        "variants": [
            {"name": "front", "width": 1024, "height": 1024},
            {"name": "wide", "prompt_template": "A {name} in a room", "width": 1344, "height": 768},
        ],
    }
    data.update(overrides)
    return CatalogConfig.model_validate(data)


def products(*rows: dict[str, str]) -> list[Product | ProductError]:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return list(read_products(io.BytesIO(body), "p.jsonl"))


# --- templates are sandboxed -------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["{name.__class__}", "{name[0]}", "{name!r}", "{name:>40}", "{0}", "{}", "{ name }"],
)
def test_template_allows_only_plain_field_names(template: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        PromptTemplate.checked(template)


@pytest.mark.parametrize("template", ["unclosed {name", "stray } brace"])
def test_template_with_bad_braces_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="bad braces"):
        PromptTemplate.checked(template)


def test_template_pastes_values_as_text_and_keeps_escaped_braces() -> None:
    template = PromptTemplate.checked("{name} {{literal}}")
    assert template.render({"name": "{color}.__class__"}) == "{color}.__class__ {literal}"


def test_config_errors_name_the_field() -> None:
    with pytest.raises(CatalogError, match=r"cfg\.json: variants\.0\.prompt_template"):
        CatalogConfig.parse(
            json.dumps(
                {
                    "name": "shop",
                    "prompt_template": "x",
                    "model": MODEL,
                    "variants": [{"name": "a", "prompt_template": "{a.b}"}],
                }
            ),
            "cfg.json",
        )


def test_config_refuses_duplicate_variants() -> None:
    with pytest.raises(ValueError, match="repeated"):
        config(variants=[{"name": "a"}, {"name": "a"}])


# --- products ----------------------------------------------------------------------------


def test_csv_products_stream_with_line_numbers_and_bad_rows_reported() -> None:
    body = (
        "\ufeffsku,name,color\r\n"
        "A-1,Mug,red\r\n"
        "bad sku!,Mug,red\r\n"
        ",Mug,red\r\n"
        "A-1,Again,blue\r\n"
        "A-2,Cup,green,extra\r\n"
        "A-3,Lamp,white\r\n"
    ).encode()
    got = list(read_products(io.BytesIO(body), "p.csv"))
    assert [g.sku for g in got if isinstance(g, Product)] == ["A-1", "A-3"]
    errors = [(g.line, g.field, g.reason) for g in got if isinstance(g, ProductError)]
    assert errors == [
        (3, "sku", "must be 1-100 of A-Z a-z 0-9 . _ -"),
        (4, "sku", "missing"),
        (5, "sku", "duplicate sku"),
        (6, "(row)", "more cells than header columns"),
    ]


def test_jsonl_products_report_non_json_and_non_objects() -> None:
    body = b'{"sku": "A", "name": "x", "price": 12.5}\nnot json\n[1]\n\n{"sku": "B"}\n'
    got = list(read_products(io.BytesIO(body), "p.jsonl"))
    assert isinstance(got[0], Product) and got[0].values["price"] == "12.5"
    assert [(g.line, g.field) for g in got if isinstance(g, ProductError)] == [
        (2, "(line)"),
        (3, "(line)"),
    ]
    assert isinstance(got[-1], Product) and got[-1].line == 5


# --- planning ----------------------------------------------------------------------------


def test_a_missing_field_is_a_per_product_error_not_a_crash() -> None:
    plan = plan_catalog_run(
        config(),
        products({"sku": "A", "name": "Mug", "color": "red"}, {"sku": "B", "name": "Cup"}),
        {},
    )
    # B has no color: its front variant fails, its wide variant (no {color}) still runs
    assert [(v.sku, v.variant) for v in plan.changed] == [
        ("A", "front"),
        ("A", "wide"),
        ("B", "wide"),
    ]
    assert [(e.sku, e.variant, e.field) for e in plan.errors] == [("B", "front", "color")]
    assert plan.products == 2


def test_unchanged_variants_are_skipped_and_changes_are_detected() -> None:
    cfg = config()
    rows = [{"sku": f"S{i}", "name": f"Thing {i}", "color": "red"} for i in range(4)]
    first = plan_catalog_run(cfg, products(*rows), {})
    recorded = {(v.sku, v.variant): v.identity_sha256 for v in first.changed}

    # the same products and config again: nothing to make
    again = plan_catalog_run(cfg, products(*rows), recorded)
    assert (again.changed, again.unchanged) == ([], 8)

    # one product's description and one variant's template change
    rows[2] = {**rows[2], "color": "blue"}
    new_cfg = config(
        variants=[
            {"name": "front", "width": 1024, "height": 1024},
            {"name": "wide", "prompt_template": "A {name} outdoors", "width": 1344, "height": 768},
        ]
    )
    changed = plan_catalog_run(new_cfg, products(*rows), recorded)
    assert sorted((v.sku, v.variant) for v in changed.changed) == [
        ("S0", "wide"),
        ("S1", "wide"),
        ("S2", "front"),
        ("S2", "wide"),
        ("S3", "wide"),
    ]
    assert changed.unchanged == 3


def test_model_size_and_seed_are_part_of_the_hash() -> None:
    rows = products({"sku": "A", "name": "Mug", "color": "red"})
    base = {
        (v.sku, v.variant): v.identity_sha256 for v in plan_catalog_run(config(), rows, {}).changed
    }
    resized = config(variants=[{"name": "front", "width": 1216, "height": 832}])
    assert plan_catalog_run(resized, rows, base).changed[0].variant == "front"
    reseeded = config(
        variants=[
            {"name": "front", "seed": 7},
            {"name": "wide", "prompt_template": "A {name} in a room", "width": 1344, "height": 768},
        ]
    )
    assert [v.variant for v in plan_catalog_run(reseeded, rows, base).changed] == ["front"]


def test_seed_is_stable_per_product() -> None:
    assert stable_seed("shop", "A") == stable_seed("shop", "A")
    assert stable_seed("shop", "A") != stable_seed("shop", "B")


def test_rendered_manifest_passes_manifest_validation(tmp_path: Path) -> None:
    cfg = CatalogConfig.parse((SAMPLE / "config.json").read_bytes(), "config.json")
    with (SAMPLE / "products.csv").open("rb") as stream:
        plan = plan_catalog_run(cfg, read_products(stream, "products.csv"), {})
    assert plan.products >= 50 and not plan.errors
    manifest = tmp_path / "night.jsonl"
    manifest.write_text("\n".join(manifest_lines(cfg, plan, "2026-11-22")) + "\n")

    settings, valid, errors = validate_manifest_file(manifest, load_catalogue())

    assert errors == []
    assert valid == len(plan.changed) == plan.products * len(cfg.variants)
    assert settings.tags == {"catalog": cfg.name, "catalog_run": "2026-11-22"}


def test_manifest_key_is_one_per_catalog_and_night() -> None:
    assert manifest_key(config(), "2026-11-22") == "manifests/catalogs/shop/2026-11-22.jsonl"


def test_a_variant_is_known_by_the_identity_its_image_is_reused_by() -> None:
    """One mechanism (issue 20): the catalog decides what changed by the image identity the
    chunks reuse images by (models/identity.py), not a hash of its own."""
    from imagebatch.backends.bedrock import bedrock_identity
    from imagebatch.manifest.reader import ManifestReader, format_for_key
    from imagebatch.manifest.schema import ValidItem
    from imagebatch.planning.routing import expand_item

    cfg = config()
    plan = plan_catalog_run(cfg, products({"sku": "A", "name": "Mug", "color": "red"}), {})
    body = "".join(f"{line}\n" for line in manifest_lines(cfg, plan, "2026-12-07")).encode()
    reader = ManifestReader(io.BytesIO(body), format_for_key("n.jsonl"), load_catalogue())
    identities = {}
    for entry in reader:
        assert isinstance(entry, ValidItem)
        for job in expand_item(entry.item, entry.line, reader.settings.tags):
            spec = load_catalogue().get(job.model)
            assert spec is not None
            identities[job.item_id] = bedrock_identity(job, spec)
    assert {v.item_id: v.identity_sha256 for v in plan.changed} == identities
