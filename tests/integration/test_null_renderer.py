"""The renderer that costs nothing: real PNGs of the asked size, real seeds, no torch."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from imagebatch_local.fakes.bedrock_server import LocalBedrock
from imagebatch_local.fakes.renderers import NullRenderer, RenderRequest
from imagebatch_serving.app import ServingSettings, load_backend
from imagebatch_serving.engine import DirectorySink, ServingEngine
from imagebatch_serving.null_backend import NullBackend, seed_colour
from PIL import Image

from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import ChunkInvocation

REPO = Path(__file__).resolve().parents[2]


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # a truncated or corrupt PNG fails here
    return image


@pytest.mark.parametrize(("width", "height"), [(64, 64), (112, 64), (64, 152), (1024, 1024)])
def test_a_valid_png_of_the_asked_size(width: int, height: int) -> None:
    (rendered,) = NullRenderer().render([RenderRequest("a mug", None, width, height, seed=7)])
    image = _decode(rendered.png)
    assert image.format == "PNG"
    assert image.size == (width, height)
    assert rendered.seed == 7
    assert image.convert("RGB").getpixel((width - 1, height - 1)) == seed_colour(7)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    renderer = NullRenderer()
    first, again, other = renderer.render(
        [RenderRequest("p", None, 64, 64, seed=s) for s in (11, 11, 12)]
    )
    assert first.png == again.png
    assert first.png != other.png


def test_the_local_bedrock_answers_with_it_in_the_wire_format() -> None:
    # GIVEN the local Bedrock with the null renderer, called by a real boto3 client
    with LocalBedrock(NullRenderer()) as bedrock:
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=bedrock.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        # WHEN a 16:9 image is asked for with a seed
        response = client.invoke_model(
            modelId="stability.sd3-5-large-v1:0",
            body=json.dumps({"prompt": "a mug", "aspect_ratio": "16:9", "seed": 42}),
        )
        body = json.loads(response["body"].read())
        stats = bedrock.stats
    # THEN the image is a PNG at the local scale of that ratio, and the seed is the one sent
    assert body["seeds"] == [42]
    assert body["finish_reasons"] == [None]
    assert _decode(base64.b64decode(body["images"][0])).size == (112, 64)
    assert stats.images_returned == 1


def test_the_serving_app_serves_it_as_accelerator_null(tmp_path: Path) -> None:
    # GIVEN the serving container's settings naming the null accelerator (no model folder)
    settings = ServingSettings.from_env(
        {"IMAGEBATCH_ACCELERATOR": "null", "IMAGEBATCH_MAX_BATCH": "4", "SM_MODEL_DIR": "/none"}
    )
    backend = load_backend(settings)
    assert isinstance(backend, NullBackend)
    engine = ServingEngine(backend, DirectorySink(tmp_path))
    jobs = [
        ImageJob(
            image_id=f"i-{n}",
            item_id="i",
            index=n + 1,
            line=2,
            prompt="a mug",
            width=128 if n == 2 else 64,
            height=64,
            seed=100 + n,
            steps=1,
            guidance=0.0,
            model="tiny-sd",
        )
        for n in range(3)
    ]
    # WHEN a chunk runs
    result = engine.run(
        ChunkInvocation(
            batch_id="b", chunk_id="00000", bucket="bk", output_prefix="outputs/", images=jobs
        )
    )
    # THEN each image is a PNG of its own size with its seed, in micro-batches by shape
    assert [i.status for i in result.images] == ["SUCCEEDED"] * 3
    assert [i.seed for i in result.images] == [100, 101, 102]
    assert [(c.width, c.images) for c in result.calls] == [(64, 2), (128, 1)]
    assert result.accelerator == "null"
    for job in jobs:
        image = _decode((tmp_path / "bk" / "outputs" / "b" / f"{job.image_id}.png").read_bytes())
        assert image.size == (job.width, job.height)


def test_neither_path_loads_torch() -> None:
    code = (
        "import sys\n"
        "from imagebatch_local.cloud.session import LocalOptions, _renderer\n"
        "from imagebatch_local.fakes.renderers import RenderRequest\n"
        "from imagebatch_serving.app import ServingSettings, load_backend\n"
        "_renderer(LocalOptions(renderer='null')).render([RenderRequest('p', None, 8, 8, 1)])\n"
        "load_backend(ServingSettings.from_env({'IMAGEBATCH_ACCELERATOR': 'null'}))\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    paths = [REPO / "src", REPO / "tools", REPO / "containers" / "serving"]
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(str(p) for p in paths), "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip() == "[]"
