"""Reserved tag keys (issue 19): `catalog` and `catalog_run` make a batch claim to be a
catalog night, so only the catalog function's own manifests (written under
manifests/catalogs/) may carry them; in any other manifest they are a line error. The item
tags the catalog also writes (`sku`, `variant`, `content_hash`) stay free for users (the demo
tags items with `sku`): finalize publishes only the manifest the catalog function recorded
(tests/integration/test_catalog_publishing.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from imagebatch.errors import ManifestError
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.planning.plan import plan_batch

SD35 = "stability.sd3-5-large-v1:0"
USER_KEY = "manifests/team/forged.jsonl"
CATALOG_KEY = "manifests/catalogs/home/2026-12-07.jsonl"


def _stream(batch_tags: dict[str, str], item_tags: dict[str, str]) -> io.BytesIO:
    batch: dict[str, Any] = {"backend": "bedrock", "model": SD35, "on_invalid": "skip"}
    if batch_tags:
        batch["tags"] = batch_tags
    header = {"batch": batch}
    items = [
        {"id": "a", "prompt": "a lamp", "tags": item_tags},
        {"id": "b", "prompt": "a chair"},
    ]
    lines = [json.dumps(header), *(json.dumps(item) for item in items)]
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def _plan(stream: io.BytesIO, key: str, tmp_path: Path) -> Any:
    return plan_batch(
        stream, key, batch_id="b", catalogue=load_catalogue(), chunk_size=10, spool=tmp_path
    )


@pytest.mark.parametrize("tag", ["catalog", "catalog_run"])
def test_a_user_manifest_header_with_a_catalog_tag_is_refused(tmp_path: Path, tag: str) -> None:
    # GIVEN a user's manifest that claims to be a catalog night
    stream = _stream({tag: "9999-12-31"}, {})
    # WHEN it is planned THEN it is refused as a whole, naming the header line and field
    with pytest.raises(ManifestError) as refused:
        _plan(stream, USER_KEY, tmp_path)
    assert (refused.value.line, refused.value.field) == (1, "batch.tags")
    assert repr(tag) in str(refused.value) and "reserved" in str(refused.value)


@pytest.mark.parametrize("tag", ["catalog", "catalog_run"])
def test_a_user_item_with_a_catalog_tag_is_a_line_error(tmp_path: Path, tag: str) -> None:
    plan = _plan(_stream({}, {tag: "9999-12-31"}), USER_KEY, tmp_path)
    # THEN that line is invalid (field tags), the other runs
    assert plan.invalid_lines == 1 and plan.images_total == 1
    assert plan.errors_path is not None
    (error,) = [json.loads(line) for line in plan.errors_path.read_text().splitlines()]
    assert (error["line"], error["field"]) == (2, "tags") and repr(tag) in error["reason"]


def test_users_keep_their_product_tags(tmp_path: Path) -> None:
    plan = _plan(_stream({}, {"sku": "MUG-001", "variant": "front"}), USER_KEY, tmp_path)
    assert plan.invalid_lines == 0 and plan.images_total == 2


def test_the_catalog_functions_manifests_keep_their_tags(tmp_path: Path) -> None:
    stream = _stream(
        {"catalog": "home", "catalog_run": "2026-12-07"},
        {"sku": "SKU1", "variant": "front", "content_hash": "abc"},
    )
    plan = _plan(stream, CATALOG_KEY, tmp_path)
    assert plan.invalid_lines == 0 and plan.images_total == 2
    assert plan.settings.tags == {"catalog": "home", "catalog_run": "2026-12-07"}


def test_the_reserved_keys_are_the_catalogs_tags() -> None:
    from imagebatch.catalog import products
    from imagebatch.manifest.checks import CATALOG_MANIFESTS_PREFIX, RESERVED_TAG_KEYS

    assert {products.CATALOG_TAG, products.RUN_TAG} == RESERVED_TAG_KEYS
    assert products.manifest_key(
        products.CatalogConfig.model_validate(
            {"name": "home", "prompt_template": "x", "variants": [{"name": "f"}], "model": SD35}
        ),
        "2026-12-07",
    ).startswith(CATALOG_MANIFESTS_PREFIX)
