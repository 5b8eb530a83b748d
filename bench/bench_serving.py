"""Serving throughput: micro-batching on vs one image per pipeline call.

The real serving app (containers/serving, Flask over HTTP on 127.0.0.1) with the diffusers
backend on the tiny offline model; 8 chunks of 64x64, 1-step images posted to /invocations at
once, PNGs written to a temporary folder instead of S3 (S3 is not what is measured). Two runs:
`--max-batch 8` (shape-grouped micro-batches) and `--max-batch 1`. Target: ratio >= 3 on 2 CPU
cores. Run: `make bench` or `.venv/bin/python bench/bench_serving.py [IMAGES_PER_CHUNK]`.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from imagebatch_cli.local.fakes.tiny_model import build_tiny_model
from imagebatch_serving.app import create_app
from imagebatch_serving.backends import DiffusersBackend
from imagebatch_serving.engine import DirectorySink, ServingEngine
from werkzeug.serving import make_server

from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import ChunkInvocation, InvocationResult

CHUNKS = 8


def chunk(index: int, images: int) -> bytes:
    jobs = [
        ImageJob(
            image_id=f"c{index}-{i}",
            item_id=f"c{index}",
            index=i + 1,
            line=i + 2,
            prompt=f"product photo {index}-{i}, studio light",
            width=64,
            height=64,
            seed=1000 * index + i,
            steps=1,
            guidance=0.0,
            model="tiny-sd",
        )
        for i in range(images)
    ]
    invocation = ChunkInvocation(
        batch_id="bench",
        chunk_id=f"{index:05d}",
        bucket="bench",
        output_prefix="outputs/",
        images=jobs,
    )
    return invocation.model_dump_json().encode()


def post(url: str, body: bytes) -> InvocationResult:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return InvocationResult.model_validate_json(response.read())


def run(backend: DiffusersBackend, max_batch: int, images: int, out: Path) -> tuple[float, int]:
    engine = ServingEngine(backend, DirectorySink(out), max_batch=max_batch)
    server = make_server("127.0.0.1", 0, create_app(engine), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        post(url, chunk(99, max_batch))  # warm-up: first-call allocations at this batch size
        bodies = [chunk(i, images) for i in range(CHUNKS)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CHUNKS) as pool:
            results = list(pool.map(lambda body: post(url, body), bodies))
        seconds = time.perf_counter() - started
    finally:
        server.shutdown()
        thread.join()
    made = sum(1 for r in results for i in r.images if i.status == "SUCCEEDED")
    calls = sum(len(r.calls) for r in results)
    assert made == CHUNKS * images, made
    return seconds, calls


def main(images: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as model_root:
        # A fresh build, not the shared cache: a cache left by an older recipe under the same
        # name is several times slower and would measure the wrong model.
        backend = DiffusersBackend.load(build_tiny_model(Path(model_root) / "m"), max_batch=8)
        measure(backend, images)


def measure(backend: DiffusersBackend, images: int, rounds: int = 3) -> None:
    print(
        f"serving bench: {CHUNKS} concurrent chunks x {images} images, 64x64, 1 step, "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"best of {rounds} alternating rounds"
    )
    best: dict[int, float] = {}
    calls: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        # Alternate the modes so a burst of load from elsewhere hits both, and keep each
        # mode's best round: the run least disturbed by other work on the machine.
        for _ in range(rounds):
            for max_batch in (8, 1):
                seconds, calls[max_batch] = run(backend, max_batch, images, Path(scratch))
                best[max_batch] = min(seconds, best.get(max_batch, seconds))
    for max_batch in (8, 1):
        print(
            f"  max_batch {max_batch}: {CHUNKS * images} images in {best[max_batch]:.2f} s, "
            f"{calls[max_batch]} pipeline calls, {CHUNKS * images / best[max_batch]:.1f} images/s"
        )
    print(f"  micro-batching speed-up: {best[1] / best[8]:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 16)
