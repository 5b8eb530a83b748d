"""A nightly catalog through the local AWS: only changed product variants are made and paid."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.catalog_local import LocalCatalogRun, run_local_catalog
from imagebatch_local.cloud.session import LocalAws, LocalOptions, local_aws
from PIL import Image

from imagebatch.pipeline.contact_sheet_render import (
    HEADER_LINE,
    LABEL_HEIGHT,
    PAD,
    THUMB,
    sheet_columns,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "events" / "catalog"
PRICE = 80_000  # SD3.5 Large, micro-dollars per image (data/bedrock_models.json)
CHANGED_SKUS = ("SKU-0005", "SKU-0020", "SKU-0042")


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with local_aws(LocalOptions(template=REPO / "template.yaml")) as running:
        yield running


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "figure":
            self.ids.append(dict(attrs)["id"] or "")


def _latest(aws: LocalAws) -> dict[str, bytes]:
    s3, found = aws.s3(), {}
    listing = s3.list_objects_v2(Bucket=aws.bucket, Prefix="catalogs/home-and-style/latest/")
    for obj in listing.get("Contents", []):
        found[obj["Key"]] = s3.get_object(Bucket=aws.bucket, Key=obj["Key"])["Body"].read()
    return found


def _night(aws: LocalAws, tmp: Path, products: Path, config: Path, day: int) -> LocalCatalogRun:
    return run_local_catalog(
        aws,
        products=products,
        config_path=config,
        state_dir=tmp / "state",
        out=tmp / "out",
        at=datetime(2026, 11, day, 2, 0, tzinfo=UTC),
    )


def _assert_contact_sheet(aws: LocalAws, run: LocalCatalogRun) -> None:
    s3 = aws.s3()
    html = s3.get_object(Bucket=aws.bucket, Key=f"reports/{run.batch_id}/index.html")["Body"]
    figures = _Figures()
    figures.feed(html.read().decode())
    assert sorted(figures.ids) == sorted(r["image_id"] for r in run.images)
    sheet_png = s3.get_object(Bucket=aws.bucket, Key=f"reports/{run.batch_id}/contact-sheet.png")
    sheet = Image.open(io.BytesIO(sheet_png["Body"].read()))
    n = len(run.images)
    columns = sheet_columns(n)
    rows = -(-n // columns)
    # a header of three lines over a near-square grid
    assert sheet.size[0] >= columns * (THUMB + PAD) + PAD
    assert sheet.size[1] == 3 * HEADER_LINE + PAD + rows * (THUMB + LABEL_HEIGHT + PAD) + PAD
    assert 0.5 <= sheet.size[0] / sheet.size[1] <= 2


def test_second_night_regenerates_exactly_the_changed_variants(
    aws: LocalAws, tmp_path: Path
) -> None:
    config = json.loads((SAMPLE / "config.json").read_text())
    with (SAMPLE / "products.csv").open(encoding="utf-8") as handle:
        products = list(csv.DictReader(handle))
    variants = [v["name"] for v in config["variants"]]
    rendered_before = aws.bedrock.stats.images_returned

    # GIVEN the sample catalog's first night: every variant of every product is made
    first = _night(aws, tmp_path, SAMPLE / "products.csv", SAMPLE / "config.json", 21)
    assert first.summary is not None and first.summary.status == "SUCCEEDED"
    assert first.result["changed"] == len(products) * len(variants) == len(first.images)
    assert first.summary.cost_micro_usd == PRICE * len(first.images)
    latest_before = _latest(aws)
    assert len(latest_before) == len(products) * len(variants)
    _assert_contact_sheet(aws, first)

    # WHEN three products change and one variant's template changes, and the next night runs
    for row in products:
        if row["sku"] in CHANGED_SKUS:
            row["name"] = f"Limited {row['name']}"
    changed_products = tmp_path / "products.csv"
    with changed_products.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(products[0]))
        writer.writeheader()
        writer.writerows(products)
    config["variants"][1]["prompt_template"] += ", golden hour"
    changed_config = tmp_path / "config.json"
    changed_config.write_text(json.dumps(config))
    second = _night(aws, tmp_path, changed_products, changed_config, 22)

    # THEN exactly the changed variants were generated and charged
    expected = {f"{sku}.{variants[0]}-1" for sku in CHANGED_SKUS} | {
        f"{row['sku']}.{variants[1]}-1" for row in products
    }
    assert second.summary is not None and second.summary.status == "SUCCEEDED"
    assert {r["image_id"] for r in second.images} == expected
    assert second.summary.cost_micro_usd == PRICE * len(expected)
    assert second.result["unchanged"] == len(products) * len(variants) - len(expected)
    assert aws.bedrock.stats.images_returned - rendered_before == len(first.images) + len(expected)

    # AND the unchanged variants keep their images; the changed ones point at the new ones
    latest_after = _latest(aws)
    assert latest_after.keys() == latest_before.keys()
    new_outputs = {r["image_id"]: r["output_key"] for r in second.images}
    for key, body in latest_after.items():
        sku, variant = key.removesuffix(".png").split("/")[-2:]
        image_id = f"{sku}.{variant}-1"
        if image_id in expected:
            made = aws.s3().get_object(Bucket=aws.bucket, Key=new_outputs[image_id])["Body"].read()
            assert body == made
        else:
            assert body == latest_before[key]
    _assert_contact_sheet(aws, second)

    # AND running the same night again makes and charges nothing
    again = _night(aws, tmp_path, changed_products, changed_config, 22)
    assert again.batch_id is None
    assert again.result["changed"] == 0
    assert aws.bedrock.stats.images_returned - rendered_before == len(first.images) + len(expected)


def test_a_product_missing_a_template_field_is_reported_and_the_rest_run(
    aws: LocalAws, tmp_path: Path
) -> None:
    config: dict[str, Any] = {
        "name": "tiny-shop",
        "products": "products.jsonl",
        "prompt_template": "A {color} {name}",
        "model": "stability.sd3-5-large-v1:0",
        "variants": [{"name": "front"}],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "products.jsonl").write_text(
        '{"sku": "T-1", "name": "mug", "color": "red"}\n{"sku": "T-2", "name": "cup"}\n'
    )
    run = run_local_catalog(
        aws,
        products=tmp_path / "products.jsonl",
        config_path=tmp_path / "config.json",
        state_dir=tmp_path / "state",
        out=tmp_path / "out",
        at=datetime(2026, 11, 23, 2, 0, tzinfo=UTC),
    )
    assert run.summary is not None and run.summary.status == "SUCCEEDED"
    assert [r["image_id"] for r in run.images] == ["T-1.front-1"]
    errors = [
        json.loads(line) for line in (tmp_path / "state" / "errors.jsonl").read_text().splitlines()
    ]
    assert errors == [
        {
            "line": 2,
            "sku": "T-2",
            "variant": "front",
            "field": "color",
            "reason": errors[0]["reason"],
        }
    ]
    assert "no value" in errors[0]["reason"]
