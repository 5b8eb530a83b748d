"""An offline text-to-image model: a real diffusers pipeline with random weights, and a renderer.

No model hub is reachable from the machines this runs on, so the local Bedrock and SageMaker
emulators render with a `StableDiffusionPipeline` built from configs: the real architecture at
a toy size (about 5 MB). Its images are noise; it exists to exercise plumbing, counts,
determinism and speed. A real diffusers model directory (for example SD 1.5 saved locally)
loads through the same `load_pipeline` and renders real pictures.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diffusers as _diffusers
import torch
from imagebatch_serving.backends import DiffusersBackend, load_diffusers_pipeline
from imagebatch_serving.engine import encode_png, group_by_shape, negative_prompts_of
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from imagebatch_local.fakes.renderers import RenderedImage, RenderRequest

logger = logging.getLogger(__name__)

# diffusers ships partial annotations that strict mypy reads as untyped calls and missing
# torch.nn.Module methods; its objects are treated as Any at this one boundary instead.
diffusers: Any = _diffusers

# Bump when the recipe below changes: a cache built by an older recipe is then rebuilt under a
# new directory instead of being silently reused.
RECIPE = "tiny-sd-v1"
MARKER = ".imagebatch-tiny-model.json"
SEED = 0
# CLIP's real context length; the pipeline pads every prompt to the tokenizer's max length.
MAX_TOKENS = 77
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable unicode symbol."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _write_tokenizer_files(folder: Path) -> None:
    """A byte-level vocab with no merges: every prompt tokenizes, one token per byte."""
    symbols = list(_bytes_to_unicode().values())
    # Same order as CLIP's real vocab: bare symbols, word-final symbols, then the specials.
    tokens = symbols + [s + "</w>" for s in symbols] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # CLIP's merges file starts with a version header; the BPE has no merges after it.
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _tokenizer(scratch: Path) -> Any:
    _write_tokenizer_files(scratch)
    return CLIPTokenizer.from_pretrained(
        str(scratch), local_files_only=True, model_max_length=MAX_TOKENS
    )


def _text_encoder(vocab_size: int, bos_id: int, eos_id: int) -> Any:
    torch.manual_seed(SEED)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        layer_norm_eps=1e-5,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        projection_dim=32,
    )
    return CLIPTextModel(config)


def _unet() -> Any:
    torch.manual_seed(SEED)
    return diffusers.UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Attention only at the half-resolution level: at full latent resolution a 64x64 image
        # is 1,024 tokens and self-attention alone took two thirds of the time.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _vae() -> Any:
    torch.manual_seed(SEED)
    # Two blocks make the latent half the image size (vae_scale_factor 2), so a 64x64 image
    # is a 32x32 latent and any multiple of 8 works for width and height.
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
        # The decoder's mid-block attention runs at full latent resolution (1,024 tokens for
        # 64x64) and cost more than the whole UNet; noise does not need it.
        mid_block_add_attention=False,
    )


def _scheduler() -> Any:
    # Euler gives a finished image at one step; PNDM's warm-up steps want several.
    return diffusers.EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        timestep_spacing="leading",
        steps_offset=1,
    )


def _is_built(target: Path) -> bool:
    return (target / MARKER).is_file()


def build_tiny_model(target: Path) -> Path:
    """Build the random-weight pipeline into `target` once; later calls return at once.

    The build goes to a sibling temporary directory which is renamed onto `target` only when
    complete, so a crash never leaves a half-written model and two racing builders both end
    with a complete one (the loser discards its copy).
    """
    target = Path(target)
    if _is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = _tokenizer(scratch / "_vocab")
        pipe = diffusers.StableDiffusionPipeline(
            vae=_vae(),
            text_encoder=_text_encoder(
                len(tokenizer), tokenizer.convert_tokens_to_ids(BOS), tokenizer.eos_token_id
            ),
            tokenizer=tokenizer,
            unet=_unet(),
            scheduler=_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        built = scratch / "model"
        pipe.save_pretrained(str(built))
        marker = {"recipe": RECIPE, "seed": SEED}
        (built / MARKER).write_text(json.dumps(marker), encoding="utf-8")
        _publish(built, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("tiny model ready at %s (%.2f s)", target, time.perf_counter() - started)
    return target


def _publish(built: Path, target: Path) -> None:
    # rename(2) replaces an empty directory atomically and fails on a non-empty one: the
    # failure means another builder won, which is fine if its copy is complete.
    try:
        os.rename(built, target)
    except OSError:
        if _is_built(target):
            logger.debug("another process built %s first", target)
            return
        raise FileExistsError(
            f"{target} exists and is not a tiny model built by imagebatch"
        ) from None


def default_model_dir() -> Path:
    root = os.environ.get("IMAGEBATCH_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "imagebatch"
    return base / f"{RECIPE}-{recipe_fingerprint()}"


def recipe_fingerprint() -> str:
    """Changes whenever the code that builds the model does, so a cache built by an older
    recipe is never mistaken for this one (it made a benchmark several times slower once)."""
    parts = (_write_tokenizer_files, _text_encoder, _unet, _vae, _scheduler, build_tiny_model)
    source = "".join(inspect.getsource(part) for part in parts) + f"{SEED}"
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]


def ensure_tiny_model() -> Path:
    return build_tiny_model(default_model_dir())


def limit_threads_for_tiny_model() -> None:
    """One intra-op thread for the tiny model (process-wide; never for a real model).

    Its tensors are too small for torch's thread pool to pay, and on a busy 2-core machine
    the pool's spinning made renders 7x slower: 60 images took 16.3 s with 1 thread and
    115.4 s with 2 (load average 5).
    """
    torch.set_num_threads(1)


def load_pipeline(model_dir: Path) -> Any:
    """Load a local diffusers text-to-image model (the tiny one or a user's real one),
    exactly as the SageMaker serving container loads its model."""
    pipe, _ = load_diffusers_pipeline(model_dir)
    return pipe


class ImageRenderer:
    """One loaded pipeline shared by many threads; renders requests in shape-grouped batches.

    Each image is seeded by its own CPU generator, so an image depends on its seed (and on the
    batch size and thread count, which change float reduction order) but not on its neighbours.
    """

    def __init__(self, pipeline: Any, *, max_batch: int = 1) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        # The serving container's backend makes the images, so the local Bedrock and the
        # SageMaker endpoint call the pipeline the same way (one seeded generator per image).
        self._backend = DiffusersBackend(pipeline, max_batch)
        self._max_batch = max_batch
        # A diffusers pipeline mutates its scheduler state per call: one call at a time.
        self._lock = threading.Lock()

    @classmethod
    def from_model_dir(cls, model_dir: Path, *, max_batch: int = 1) -> ImageRenderer:
        return cls(load_pipeline(model_dir), max_batch=max_batch)

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def render(self, requests: Sequence[RenderRequest]) -> list[RenderedImage]:
        """Render every request, in shape-grouped calls; results in the requests' order."""
        results: list[RenderedImage | None] = [None] * len(requests)
        batches = group_by_shape(
            list(enumerate(requests)), lambda indexed: indexed[1].call_shape, self._max_batch
        )
        for batch in batches:
            for index, image in zip(
                (i for i, _ in batch), self._render_batch([r for _, r in batch]), strict=True
            ):
                results[index] = image
        return [image for image in results if image is not None]

    def _render_batch(self, batch: list[RenderRequest]) -> list[RenderedImage]:
        started = time.perf_counter()
        with self._lock:
            images = self._backend.generate(
                batch[0].call_shape,
                [r.prompt for r in batch],
                negative_prompts_of([r.negative_prompt for r in batch]),
                [r.seed for r in batch],
            )
        pngs = [encode_png(image) for image in images]
        seconds = (time.perf_counter() - started) / len(batch)
        return [
            RenderedImage(png=png, seed=request.seed, seconds=seconds)
            for png, request in zip(pngs, batch, strict=True)
        ]


__all__ = [
    "ImageRenderer",
    "RenderRequest",
    "RenderedImage",
    "build_tiny_model",
    "default_model_dir",
    "ensure_tiny_model",
    "load_pipeline",
]
