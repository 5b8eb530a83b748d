"""An image's identity (models.identity, backends.bedrock.bedrock_identity): what decides the
pixels changes it; tags, ids, the line and the output prefix do not."""

from __future__ import annotations

from typing import Any

import pytest

from imagebatch.backends.bedrock import bedrock_identity
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.identity import image_identity
from imagebatch.models.records import ImageJob

MODEL = "stability.sd3-5-large-v1:0"


def job(**changes: Any) -> ImageJob:
    base: dict[str, Any] = {
        "image_id": "a-1",
        "item_id": "a",
        "index": 1,
        "line": 2,
        "prompt": "a red bicycle",
        "negative_prompt": "blur",
        "width": 1024,
        "height": 1024,
        "seed": 42,
        "steps": 30,
        "guidance": 5.0,
        "model": MODEL,
        "tags": {"team": "web"},
    }
    return ImageJob(**{**base, **changes})


def identity(j: ImageJob) -> str:
    spec = load_catalogue().get(j.model)
    assert spec is not None
    return bedrock_identity(j, spec)


def test_identity_is_a_sha256_hex_and_stable() -> None:
    first = identity(job())
    assert len(first) == 64 and int(first, 16) >= 0
    assert identity(job()) == first


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 43},
        {"prompt": "a blue bicycle"},
        {"negative_prompt": None},
        {"width": 1216, "height": 832},
        {"steps": 31},
        {"guidance": 6.0},
        {"model": "stability.stable-image-core-v1:1"},
    ],
)
def test_what_decides_the_pixels_changes_the_identity(change: dict[str, Any]) -> None:
    assert identity(job(**change)) != identity(job())


@pytest.mark.parametrize(
    "change",
    [
        {"tags": {"team": "other"}},
        {"tags": {}},
        {"image_id": "b-3", "item_id": "b", "index": 3},
        {"line": 900},
    ],
)
def test_tags_ids_and_lines_do_not_count(change: dict[str, Any]) -> None:
    assert identity(job(**change)) == identity(job())


def test_a_model_option_and_the_backend_model_count() -> None:
    def of(options: dict[str, Any], backend_model: dict[str, str]) -> str:
        return image_identity(
            job(),
            backend="sagemaker",
            backend_model=backend_model,
            request_family="serving",
            family_version=1,
            options=options,
        )

    model = {"model_id": "sdxl-turbo", "compile": "neuron-2.20", "buckets": "512x512"}
    assert of({"scheduler": "euler"}, model) != of({"scheduler": "ddim"}, model)
    assert of({}, model) != of({}, {**model, "compile": "neuron-2.21"})
    assert of({}, model) != of({}, {**model, "buckets": "512x512,768x768"})
    # the order of a mapping is not part of it
    assert of({"a": 1, "b": 2}, model) == of({"b": 2, "a": 1}, dict(reversed(model.items())))


def test_the_request_family_version_counts() -> None:
    common: dict[str, Any] = {"backend": "bedrock", "backend_model": {"model_id": MODEL}}
    v1 = image_identity(job(), request_family="stability", family_version=1, **common)
    v2 = image_identity(job(), request_family="stability", family_version=2, **common)
    assert v1 != v2
