"""The two pipeline backends behind one interface: diffusers (CUDA or CPU) and AWS Neuron.

The Neuron backend is a thin class choice over the same serving code: optimum-neuron's
`NeuronStableDiffusionPipeline` / `NeuronStableDiffusionXLPipeline` take the same call as a
diffusers pipeline, but each resolution is its own compiled artifact with a fixed batch size,
so it keeps one pipeline per shape bucket and pads a short micro-batch up to that size.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from imagebatch.models.sagemaker_contract import ShapeBucket, parse_buckets
from imagebatch_serving.engine import CallShape, StopCheck

logger = logging.getLogger(__name__)

#: Written by `python -m imagebatch_serving.compile` next to the compiled bucket folders.
BUCKETS_FILE = "buckets.json"


class ModelLoadError(Exception):
    pass


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """The one device/dtype policy: CUDA in bf16 where supported (else fp16), CPU in float32.

    CPU half precision is slow or unsupported for several kernels, so CPU stays float32.
    """
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda"), dtype
    return torch.device("cpu"), torch.float32


def load_diffusers_pipeline(model_dir: Path) -> tuple[Any, torch.device]:
    """Load a diffusers text-to-image model from disk, on the device policy above.

    `AutoPipelineForText2Image` maps whatever pipeline class the folder was saved as to its
    text-to-image variant; `local_files_only` keeps a mistyped path from reaching for a hub.
    The serving app and the local tools (tiny model, `--model-dir`) both load through here.
    """
    import diffusers

    if not (model_dir / "model_index.json").is_file():
        raise ModelLoadError(f"{model_dir} holds no diffusers model (model_index.json)")
    device, dtype = device_and_dtype()
    started = time.perf_counter()
    pipe: Any = diffusers.AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
        str(model_dir), local_files_only=True, dtype=dtype
    )
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    logger.info(
        "loaded %s from %s on %s/%s in %.2f s",
        type(pipe).__name__,
        model_dir,
        device,
        dtype,
        time.perf_counter() - started,
    )
    return pipe, device


def set_torch_threads(count: int) -> None:
    """torch's intra-op threads for this process. On the CPU backend they share the cores
    with the request threads; one thread per core leaves none for the server, and a call's
    threads that lose their core mid-step wait on each other (bench/README.md)."""
    torch.set_num_threads(count)
    logger.info("torch intra-op threads: %d", count)


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    # CPU generators: the initial latents are then the same on every device for a seed.
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


@dataclass
class DiffusersBackend:
    pipeline: Any
    max_batch: int
    buckets: tuple[ShapeBucket, ...] = ()
    accelerator: str = "cpu"

    @classmethod
    def load(
        cls, model_dir: Path, *, max_batch: int, buckets: tuple[ShapeBucket, ...] = ()
    ) -> DiffusersBackend:
        pipe, device = load_diffusers_pipeline(model_dir)
        return cls(pipe, max_batch, buckets, device.type)

    def generate(
        self,
        shape: CallShape,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | None,
        seeds: Sequence[int],
        should_stop: StopCheck | None = None,
    ) -> list[Image.Image]:
        output = self.pipeline(
            prompt=list(prompts),
            negative_prompt=list(negative_prompts) if negative_prompts else None,
            width=shape.width,
            height=shape.height,
            num_inference_steps=shape.steps,
            guidance_scale=shape.guidance,
            generator=_generators(seeds),
            output_type="pil",
            callback_on_step_end=_interrupter(should_stop) if should_stop else None,
        )
        return list(output.images)


def _interrupter(should_stop: StopCheck) -> Any:
    """A diffusers step-end callback that stops the denoising loop when `should_stop` says so:
    diffusers pipelines skip the remaining steps once `pipeline._interrupt` is set (see
    `interrupt` in StableDiffusionPipeline.__call__)."""

    def on_step_end(
        pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if should_stop():
            pipeline._interrupt = True
        return callback_kwargs

    return on_step_end


def neuron_available() -> bool:
    try:
        import torch_neuronx  # noqa: F401
    except ImportError:
        return False
    return True


# Each worker process sees one NeuronCore (gunicorn_conf.py sets NEURON_RT_VISIBLE_CORES) and
# loads the whole pipeline there: optimum-neuron's default for a U-Net pipeline ("unet") would
# put a DataParallel U-Net on cores 0 and 1 of a process that has only one.
NEURON_LOAD_OPTIONS: dict[str, Any] = {"data_parallel_mode": "none"}


@dataclass
class NeuronBackend:
    """One compiled pipeline per shape bucket, all compiled for the same batch size."""

    pipelines: dict[ShapeBucket, Any]
    max_batch: int
    accelerator: str = "neuron"

    @property
    def buckets(self) -> tuple[ShapeBucket, ...]:
        return tuple(self.pipelines)

    @classmethod
    def load(cls, model_dir: Path) -> NeuronBackend:
        manifest_path = model_dir / BUCKETS_FILE
        if not manifest_path.is_file():
            raise ModelLoadError(
                f"{model_dir} has no {BUCKETS_FILE}: build model.tar.gz with "
                "`python -m imagebatch_serving.compile`"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        from optimum.neuron import (
            NeuronStableDiffusionPipeline,
            NeuronStableDiffusionXLPipeline,
        )

        pipeline_class: Any = (
            NeuronStableDiffusionXLPipeline
            if manifest.get("pipeline") == "sdxl"
            else NeuronStableDiffusionPipeline
        )
        pipelines = {}
        for bucket in parse_buckets(",".join(manifest["buckets"])):
            started = time.perf_counter()
            pipelines[bucket] = pipeline_class.from_pretrained(
                str(model_dir / str(bucket)), **NEURON_LOAD_OPTIONS
            )
            logger.info("loaded Neuron %s in %.1f s", bucket, time.perf_counter() - started)
        return cls(pipelines, int(manifest["batch_size"]))

    def generate(
        self,
        shape: CallShape,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | None,
        seeds: Sequence[int],
        should_stop: StopCheck | None = None,
    ) -> list[Image.Image]:
        # A compiled graph's call time is fixed per bucket, so the engine's prediction (the
        # last call of the bucket) bounds it; `should_stop` is not wired into the Neuron loop.
        pipeline = self.pipelines[ShapeBucket(width=shape.width, height=shape.height)]
        # A compiled graph takes exactly its batch size: pad with copies of the last image
        # and drop their outputs (their time is the price of a partial micro-batch).
        pad = self.max_batch - len(prompts)
        padded_negatives = (
            [*negative_prompts, *[negative_prompts[-1]] * pad] if negative_prompts else None
        )
        output = pipeline(
            prompt=[*prompts, *[prompts[-1]] * pad],
            negative_prompt=padded_negatives,
            num_inference_steps=shape.steps,
            guidance_scale=shape.guidance,
            generator=_generators([*seeds, *[seeds[-1]] * pad]),
            output_type="pil",
        )
        return list(output.images)[: len(prompts)]
