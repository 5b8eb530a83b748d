"""The serving application on the CPU path with the tiny model; the Neuron path where it can run."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from imagebatch_local.fakes.tiny_model import build_tiny_model
from imagebatch_serving.app import create_app
from imagebatch_serving.backends import DiffusersBackend, NeuronBackend, neuron_available
from imagebatch_serving.compile import compile_buckets
from imagebatch_serving.engine import CallShape, S3Sink, ServingEngine, micro_batches
from PIL import Image

from imagebatch.models.records import FailureClass, ImageJob
from imagebatch.models.sagemaker_contract import (
    ChunkInvocation,
    InvocationResult,
    ShapeBucket,
    parse_buckets,
)

NEURON_SKIP = pytest.mark.skipif(
    not neuron_available(),
    reason="torch_neuronx is absent: the Neuron path needs the AWS Neuron SDK and an "
    "Inferentia2/Trainium device (run on an inf2 instance or in containers/neuron)",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> DiffusersBackend:
    return DiffusersBackend.load(model_dir, max_batch=4, buckets=parse_buckets("64x64,128x64"))


def job(image_id: str, seed: int, width: int = 64, height: int = 64) -> ImageJob:
    return ImageJob(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        index=1,
        line=2,
        prompt=f"a mug {image_id}",
        width=width,
        height=height,
        seed=seed,
        steps=1,
        guidance=0.0,
        model="tiny-sd",
    )


def chunk(jobs: list[ImageJob], bucket: str, token: str | None = None) -> ChunkInvocation:
    return ChunkInvocation(
        batch_id="batch-1",
        chunk_id="00000",
        bucket=bucket,
        output_prefix="outputs/",
        task_token=token,
        images=jobs,
    )


def test_micro_batches_group_by_shape_up_to_the_batch_size() -> None:
    jobs = [job(f"a-{i}", i) for i in range(5)] + [job("w-1", 9, width=128)]
    batches = micro_batches(jobs, 4)
    assert [[j.image_id for j in b] for b in batches] == [
        ["a-0", "a-1", "a-2", "a-3"],
        ["a-4"],
        ["w-1"],
    ]
    assert [len(b) for b in micro_batches(jobs, 1)] == [1] * 6


def test_a_chunk_becomes_pngs_in_s3_with_the_bedrock_metadata(
    backend: DiffusersBackend, s3_client: Any, s3_bucket: str
) -> None:
    # GIVEN five 64x64 images, one 128x64, one size the endpoint was not compiled for
    jobs = [job(f"a-{i}", 100 + i) for i in range(5)]
    jobs += [job("w-1", 7, width=128), job("big-1", 8, width=512, height=512)]
    beats: list[str] = []
    engine = ServingEngine(backend, S3Sink(s3_client), heartbeat=beats.append)
    # WHEN the chunk runs
    result = engine.run(chunk(jobs, s3_bucket, token="token-1"))
    # THEN same-shape images shared calls of at most 4, in order
    assert [c.images for c in result.calls] == [4, 1, 1]
    assert [i.image_id for i in result.images] == [j.image_id for j in jobs]
    shares = {i.image_id: i.inference_seconds for i in result.images}
    assert shares["a-0"] == shares["a-3"] == pytest.approx(result.calls[0].seconds / 4)
    assert beats == ["token-1"] * 3
    # AND the unsupported size failed as invalid, naming the buckets
    big = result.images[-1]
    assert big.status == "FAILED"
    assert big.failure_class is FailureClass.INVALID
    assert big.failure_reason is not None
    assert "64x64, 128x64" in big.failure_reason
    # AND each PNG is in S3 at its key with the Bedrock path's metadata
    first = result.images[0]
    assert first.key == "outputs/batch-1/a-0.png"
    head = s3_client.head_object(Bucket=s3_bucket, Key=first.key)
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {
        "batch-id": "batch-1",
        "item-id": "a",
        "model": "tiny-sd",
        "seed": "100",
        "prompt-sha256": jobs[0].prompt_sha256,
    }
    body = s3_client.get_object(Bucket=s3_bucket, Key="outputs/batch-1/w-1.png")["Body"].read()
    assert Image.open(io.BytesIO(body)).size == (128, 64)


def test_same_chunk_same_bytes_and_each_image_follows_its_seed(
    backend: DiffusersBackend, s3_client: Any, s3_bucket: str
) -> None:
    engine = ServingEngine(backend, S3Sink(s3_client))

    def pngs(jobs: list[ImageJob]) -> list[bytes]:
        engine.run(chunk(jobs, s3_bucket))
        return [
            s3_client.get_object(Bucket=s3_bucket, Key=f"outputs/batch-1/{j.image_id}.png")[
                "Body"
            ].read()
            for j in jobs
        ]

    twice = [job("s-1", 1), job("s-2", 2)]
    assert pngs(twice) == pngs(twice)
    first, second = pngs(twice)
    assert first != second


def test_the_app_speaks_the_sagemaker_contract(
    backend: DiffusersBackend, s3_client: Any, s3_bucket: str
) -> None:
    client = create_app(ServingEngine(backend, S3Sink(s3_client))).test_client()
    assert client.get("/ping").status_code == 200
    # a request that is not a chunk: 400, named
    bad = client.post("/invocations", data=b'{"batch_id": 1}', content_type="application/json")
    assert bad.status_code == 400
    assert bad.get_json()["error"] == "InvalidRequest"
    # a chunk: 200 and the result
    ok = client.post(
        "/invocations",
        data=chunk([job("h-1", 3)], s3_bucket).model_dump_json(),
        content_type="application/json",
    )
    assert ok.status_code == 200
    result = InvocationResult.model_validate(ok.get_json())
    assert result.images[0].status == "SUCCEEDED"


class _Broken:
    accelerator, max_batch, buckets = "cpu", 2, ()

    def generate(self, *args: Any) -> list[Image.Image]:
        raise RuntimeError("device lost")


def test_a_pipeline_failure_is_a_500_so_sagemaker_reports_an_error(s3_bucket: str) -> None:
    client = create_app(ServingEngine(_Broken(), S3Sink(None))).test_client()
    response = client.post(
        "/invocations",
        data=chunk([job("x-1", 1)], s3_bucket).model_dump_json(),
        content_type="application/json",
    )
    assert response.status_code == 500
    body = json.loads(response.data)
    assert (body["error"], body["message"]) == ("RuntimeError", "device lost")
    # the failed call's seconds travel with the error, so they are charged
    assert [c["images"] for c in body["partial"]["calls"]] == [1]
    assert body["partial"]["images"] == []


class _Timed:
    """A pipeline whose calls take scripted seconds on a fake clock, step by step."""

    accelerator, max_batch, buckets = "cpu", 2, ()

    def __init__(self, step_seconds: float) -> None:
        self.now = 0.0
        self.step_seconds = step_seconds
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def generate(
        self,
        shape: CallShape,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | None,
        seeds: Sequence[int],
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Image.Image]:
        self.calls += 1
        for _ in range(shape.steps):
            self.now += self.step_seconds * len(prompts)
            if should_stop is not None and should_stop():
                break
        return [Image.new("RGB", (shape.width, shape.height)) for _ in prompts]


def _budgeted(jobs: list[ImageJob], bucket: str, seconds: float, per_image: float) -> Any:
    invocation = chunk(jobs, bucket)
    return invocation.model_copy(
        update={
            "max_seconds": seconds,
            "seconds_per_image": {"64x64/4/nocfg": per_image},
        }
    )


def _jobs4(n: int) -> list[ImageJob]:
    return [job(f"h-{i}", i).model_copy(update={"steps": 4}) for i in range(n)]


def test_no_call_starts_that_would_run_past_the_held_seconds(
    s3_client: Any, s3_bucket: str
) -> None:
    # GIVEN 6 images (3 calls of 2) at 1 s per image and a hold of 4.5 instance-seconds
    backend = _Timed(step_seconds=0.25)
    engine = ServingEngine(backend, S3Sink(s3_client), clock=backend.clock)
    # WHEN the chunk runs
    result = engine.run(_budgeted(_jobs4(6), s3_bucket, seconds=4.5, per_image=1.0))
    # THEN two calls ran (4 s); the third (2 s more) did not start and its images are left
    # out for the retry, with the reason
    assert backend.calls == 2
    assert [c.seconds for c in result.calls] == [2.0, 2.0]
    assert [i.image_id for i in result.images] == ["h-0", "h-1", "h-2", "h-3"]
    assert result.stopped is not None
    assert "4.500" in result.stopped


def test_a_call_slower_than_expected_is_stopped_at_a_step_and_its_seconds_kept(
    s3_client: Any, s3_bucket: str
) -> None:
    # GIVEN images expected at 0.1 s that take 1 s (0.5 s a step for a call of two), and
    # 1.2 instance-seconds held
    backend = _Timed(step_seconds=0.25)
    engine = ServingEngine(backend, S3Sink(s3_client), clock=backend.clock)
    # WHEN the chunk runs
    result = engine.run(_budgeted(_jobs4(4), s3_bucket, seconds=1.2, per_image=0.1))
    # THEN the first call was stopped at the step that passed the held seconds: its seconds
    # are in the result, its images are not, it went past the hold by less than one step,
    # and no later call started
    assert [c.interrupted for c in result.calls] == [True]
    assert result.calls[0].seconds == pytest.approx(1.5)
    assert result.calls[0].steps_done == 3
    assert result.images == []
    assert result.stopped is not None


def test_the_tiny_pipeline_stops_at_a_step_when_asked(backend: DiffusersBackend) -> None:
    steps: list[int] = []

    def stop() -> bool:
        steps.append(1)
        return True

    images = backend.generate(CallShape(64, 64, 5, 0.0), ["a mug"], None, [1], stop)
    # asked once: after the first step the loop skips the rest
    assert len(steps) == 1
    assert len(images) == 1


class _CompiledPipeline:
    """Stands in for a NeuronStableDiffusionPipeline compiled at batch 4."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        assert len(kwargs["prompt"]) == 4, "a compiled graph takes exactly its batch size"
        assert len(kwargs["generator"]) == 4
        self.calls.append(kwargs)

        return SimpleNamespace(images=[Image.new("RGB", (64, 64), (i, 0, 0)) for i in range(4)])


def test_neuron_backend_pads_a_short_micro_batch_and_drops_the_padding() -> None:
    pipeline = _CompiledPipeline()
    backend = NeuronBackend({ShapeBucket(width=64, height=64): pipeline}, max_batch=4)
    images = backend.generate(CallShape(64, 64, 1, 0.0), ["a", "b"], None, [1, 2])
    assert len(images) == 2
    assert pipeline.calls[0]["prompt"] == ["a", "b", "b", "b"]
    assert backend.buckets == (ShapeBucket(width=64, height=64),)


@pytest.mark.neuron
@NEURON_SKIP
def test_neuron_compiles_and_serves_the_tiny_model(model_dir: Path, tmp_path: Path) -> None:
    from imagebatch_serving.compile import _run

    work = compile_buckets(
        str(model_dir),
        [ShapeBucket(width=64, height=64)],
        2,
        tmp_path / "neuron",
        pipeline="sd",
        runner=_run,
    )
    backend = NeuronBackend.load(work)
    images = backend.generate(CallShape(64, 64, 1, 0.0), ["a mug"], None, [1])
    assert images[0].size == (64, 64)
