"""The offline tiny diffusers model: build once, load fast, render deterministic PNGs."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from imagebatch_local.fakes.tiny_model import (
    MARKER,
    ImageRenderer,
    RenderRequest,
    build_tiny_model,
    default_model_dir,
    ensure_tiny_model,
    load_pipeline,
    recipe_fingerprint,
)
from PIL import Image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def renderer(model_dir: Path) -> ImageRenderer:
    return ImageRenderer(load_pipeline(model_dir), max_batch=4)


def request(
    seed: int, width: int = 64, height: int = 64, prompt: str = "a red cube"
) -> RenderRequest:
    return RenderRequest(
        prompt=prompt, negative_prompt=None, width=width, height=height, seed=seed, steps=1
    )


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def test_build_writes_a_diffusers_folder_with_a_marker(model_dir: Path) -> None:
    assert (model_dir / "model_index.json").is_file()
    assert (model_dir / MARKER).is_file()
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (model_dir / component).is_dir()


def test_second_build_is_a_no_op(model_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    marker = (model_dir / MARKER).read_bytes()
    assert build_tiny_model(model_dir) == model_dir
    assert (model_dir / MARKER).read_bytes() == marker
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")} == before


def test_build_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "something.txt").write_text("not a model")
    with pytest.raises(FileExistsError):
        build_tiny_model(target)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".taken.")]


def test_loads_from_its_folder(model_dir: Path) -> None:
    # how long loading takes is a benchmark's figure (it failed here under load), not a test's
    pipe = load_pipeline(model_dir)
    assert pipe.unet.config.sample_size <= 64
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_one_step_image_is_a_png_of_the_requested_size(renderer: ImageRenderer) -> None:
    [square] = renderer.render([request(1)])
    assert png_size(square.png) == (64, 64)
    assert square.seed == 1
    assert square.seconds > 0
    [wide] = renderer.render([request(1, width=112, height=64)])
    assert png_size(wide.png) == (112, 64)


def test_same_seed_same_bytes_different_seed_different_bytes(renderer: ImageRenderer) -> None:
    first, again, other = (renderer.render([request(seed)])[0] for seed in (7, 7, 8))
    assert first.png == again.png
    assert first.png != other.png


def test_micro_batch_keeps_order_and_sizes(renderer: ImageRenderer) -> None:
    requests = [request(seed) for seed in (11, 12, 13, 14)]
    images = renderer.render(requests)
    assert [image.seed for image in images] == [11, 12, 13, 14]
    assert all(png_size(image.png) == (64, 64) for image in images)
    assert len({image.png for image in images}) == 4
    # One pipeline call shared by four images: each carries a quarter of its time.
    assert len({image.seconds for image in images}) == 1


def test_mixed_shapes_split_into_batches_in_request_order(renderer: ImageRenderer) -> None:
    requests = [request(1), request(2, width=112), request(3), request(4, height=112)]
    sizes = [png_size(image.png) for image in renderer.render(requests)]
    assert sizes == [(64, 64), (112, 64), (64, 64), (64, 112)]


def test_negative_prompts_mix_with_none(renderer: ImageRenderer) -> None:
    plain = request(5)
    negative = RenderRequest("a red cube", "blurry", 64, 64, seed=5, steps=1, guidance=2.0)
    images = renderer.render([plain, negative])
    assert len(images) == 2


class RecordingPipeline:
    """A stand-in diffusers pipeline: records each call's shape, answers blank images."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, list[str] | None]] = []

    def __call__(self, **kwargs: Any) -> Any:
        prompts = kwargs["prompt"]
        self.calls.append(
            (kwargs["width"], kwargs["height"], len(prompts), kwargs["negative_prompt"])
        )
        blank = Image.new("RGB", (kwargs["width"], kwargs["height"]))
        return SimpleNamespace(images=[blank] * len(prompts))


def test_renderer_makes_the_pipeline_calls_the_serving_engine_would() -> None:
    # GIVEN a renderer of at most 2 images a call over a pipeline that records its calls
    pipeline = RecordingPipeline()
    renderer = ImageRenderer(pipeline, max_batch=2)
    negative = RenderRequest("a cup", "blurry", 64, 64, seed=9, steps=1)
    requests = [request(1), request(2, width=112), request(3), request(4), negative]
    # WHEN it renders five requests of two shapes
    images = renderer.render(requests)
    # THEN calls group one shape up to the batch size in first-seen order (the serving
    # engine's micro-batching), negatives go as a list only to the call that has one,
    # and the images come back in request order as PNGs
    assert pipeline.calls == [
        (64, 64, 2, None),
        (112, 64, 1, None),
        (64, 64, 2, ["", "blurry"]),
    ]
    assert [image.seed for image in images] == [1, 2, 3, 4, 9]
    assert [png_size(image.png) for image in images][:2] == [(64, 64), (112, 64)]


def test_request_rejects_sizes_the_unet_cannot_take() -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        request(1, width=60)


def test_ensure_tiny_model_caches_under_imagebatch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    monkeypatch.setenv("IMAGEBATCH_CACHE", str(tmp_path))
    assert default_model_dir() == tmp_path / f"tiny-sd-v1-{recipe_fingerprint()}"
    built = ensure_tiny_model()
    assert built == default_model_dir()
    assert (built / MARKER).is_file()
    marker_time = (built / MARKER).stat().st_mtime_ns
    assert ensure_tiny_model() == built
    assert (built / MARKER).stat().st_mtime_ns == marker_time
    # Built by the same seeded recipe, so the weights match byte for byte.
    weights = sorted(p.relative_to(built) for p in built.rglob("*.safetensors"))
    assert weights
    for relative in weights:
        assert (built / relative).read_bytes() == (model_dir / relative).read_bytes()


def test_recipe_fingerprint_names_the_code_that_builds_the_model() -> None:
    fingerprint = recipe_fingerprint()
    assert len(fingerprint) == 12
    assert fingerprint == recipe_fingerprint()
    assert default_model_dir().name.endswith(fingerprint)
