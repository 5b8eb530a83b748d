"""The Bedrock model catalogue: every text-to-image model as data, prices by tier, lifecycle."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest

from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import ManifestFormat, ManifestReader
from imagebatch.manifest.schema import ValidItem
from imagebatch.models.bedrock_models import load_catalogue

TODAY = date(2026, 11, 22)
STABILITY = (
    "stability.sd3-5-large-v1:0",
    "stability.stable-image-core-v1:1",
    "stability.stable-image-ultra-v1:1",
)
AMAZON = ("amazon.titan-image-generator-v2:0", "amazon.nova-canvas-v1:0")


def test_catalogue_lists_every_model_with_its_family() -> None:
    catalogue = load_catalogue()
    assert set(catalogue.model_ids) == {*STABILITY, *AMAZON}
    assert catalogue.default_model_id == "stability.sd3-5-large-v1:0"
    for model_id in STABILITY:
        assert catalogue.get(model_id).request_family == "stability"  # type: ignore[union-attr]
    for model_id in AMAZON:
        assert catalogue.get(model_id).request_family == "amazon"  # type: ignore[union-attr]


def test_every_price_has_a_source_a_date_and_exact_micro_dollars() -> None:
    for spec in load_catalogue().models:
        assert spec.prices, spec.model_id
        for price in spec.prices:
            assert price.source.startswith("https://"), price
            assert price.retrieved.year == 2026
            assert price.micro_usd_per_image == price.usd_per_image * 1_000_000
        assert spec.throughput.images_per_minute >= 1
        assert spec.throughput.source
        assert spec.docs.startswith("https://docs.aws.amazon.com/")


@pytest.mark.parametrize(
    ("model_id", "usd"),
    [
        ("stability.sd3-5-large-v1:0", "0.08"),
        ("stability.stable-image-core-v1:1", "0.04"),
        ("stability.stable-image-ultra-v1:1", "0.14"),
    ],
)
def test_stability_prices(model_id: str, usd: str) -> None:
    spec = load_catalogue().get(model_id)
    assert spec is not None
    assert str(spec.price_for(1024, 1024).usd_per_image) == usd


@pytest.mark.parametrize(
    ("model_id", "width", "height", "quality", "tier", "micro"),
    [
        ("amazon.titan-image-generator-v2:0", 512, 512, "standard", "standard-512", 8_000),
        ("amazon.titan-image-generator-v2:0", 1024, 1024, "standard", "standard-1024", 10_000),
        ("amazon.titan-image-generator-v2:0", 1024, 1024, "premium", "premium-1024", 12_000),
        # Larger than every tier: billed at the largest, never under-estimated.
        ("amazon.titan-image-generator-v2:0", 1408, 768, "standard", "standard-1024", 10_000),
        ("amazon.nova-canvas-v1:0", 1024, 1024, "standard", "standard-1024", 40_000),
        ("amazon.nova-canvas-v1:0", 2048, 2048, "standard", "standard-2048", 60_000),
        ("amazon.nova-canvas-v1:0", 1280, 720, "premium", "premium-1024", 60_000),
        ("amazon.nova-canvas-v1:0", 1600, 1600, "premium", "premium-2048", 80_000),
    ],
)
def test_amazon_price_tiers_follow_pixels_and_quality(
    model_id: str, width: int, height: int, quality: str, tier: str, micro: int
) -> None:
    spec = load_catalogue().get(model_id)
    assert spec is not None
    price = spec.price_for(width, height, quality)
    assert (price.tier, price.micro_usd_per_image) == (tier, micro)


def test_legacy_models_are_past_end_of_life_and_name_a_replacement() -> None:
    catalogue = load_catalogue()
    titan, nova = (catalogue.get(m) for m in AMAZON)
    assert titan is not None and nova is not None
    assert titan.lifecycle.status == nova.lifecycle.status == "legacy"
    assert titan.lifecycle.end_of_life == date(2026, 6, 30)
    assert nova.lifecycle.end_of_life == date(2026, 9, 30)
    for spec in (titan, nova):
        assert spec.is_retired(TODAY)
        assert not spec.is_retired(date(2026, 6, 1))
        replacement = catalogue.get(spec.lifecycle.replacement or "")
        assert replacement is not None and not replacement.is_retired(TODAY)
    assert not any(catalogue.get(m).is_retired(TODAY) for m in STABILITY)  # type: ignore[union-attr]


def test_nova_takes_any_size_within_its_rule_titan_only_its_list() -> None:
    catalogue = load_catalogue()
    nova = catalogue.get("amazon.nova-canvas-v1:0")
    titan = catalogue.get("amazon.titan-image-generator-v2:0")
    assert nova is not None and titan is not None
    size = nova.size(1600, 896)
    assert size is not None and size.aspect_ratio == "25:14"
    assert nova.size(1600, 900) is None  # 900 is not a multiple of 16
    assert nova.size(4096, 1040) is None  # more than 4,194,304 pixels
    assert nova.size(2048, 320) is None  # wider than 4:1
    assert nova.size(304, 304) is None  # a side under 320
    assert titan.size(1152, 768) is not None
    assert titan.size(1600, 896) is None
    assert "or any size with sides 320-4096" in nova.describe_sizes()


def _read(lines: list[dict[str, object]]) -> list[object]:
    data = "\n".join(json.dumps(line) for line in lines).encode()
    reader = ManifestReader(io.BytesIO(data), ManifestFormat.JSONL, load_catalogue(), today=TODAY)
    return list(reader)


@pytest.mark.parametrize("model_id", AMAZON)
def test_ingest_refuses_a_retired_header_model_naming_the_replacement(model_id: str) -> None:
    with pytest.raises(ManifestError, match=r"end of life on 2026-0[69]-30; use stability\."):
        _read(
            [
                {"batch": {"model": model_id}},
                {"id": "a", "prompt": "p", "width": 1024, "height": 1024},
            ]
        )


def test_an_item_naming_a_retired_model_is_a_line_error() -> None:
    [result] = _read(
        [
            {
                "id": "a",
                "prompt": "p",
                "model": "amazon.nova-canvas-v1:0",
                "width": 1024,
                "height": 1024,
            }
        ]
    )
    assert not isinstance(result, ValidItem)
    assert any(
        e.field == "model" and "stability.stable-image-core-v1:1" in e.reason
        for e in result.errors  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"model": "stability.stable-image-core-v1:1", "width": 100, "height": 64}, "width"),
        ({"model": "stability.stable-image-ultra-v1:1", "prompt": "x" * 10_001}, "prompt"),
        ({"model": "stability.stable-image-core-v1:1", "guidance": 7.0}, "guidance"),
        ({"model": "stability.stable-image-core-v1:1", "seed": 4_294_967_295}, "seed"),
    ],
)
def test_model_limits_are_line_errors_before_anything_is_spent(
    item: dict[str, object], field: str
) -> None:
    [result] = _read([{"id": "a", "prompt": "p", **item}])
    assert not isinstance(result, ValidItem)
    assert field in {e.field for e in result.errors}  # type: ignore[attr-defined]


def test_every_stability_model_accepts_its_sizes() -> None:
    for model_id in STABILITY:
        results = _read(
            [{"id": "w", "prompt": "p", "model": model_id, "width": 1344, "height": 768}]
        )
        assert isinstance(results[0], ValidItem)
