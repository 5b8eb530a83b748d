"""How much memory and CPU does one chunk Lambda need? Peak RSS and CPU per image, measured.

The chunk function (functions/generate_chunk/app.py, the real handler) runs one chunk of 50
1024x1024 images in a fresh process, as a Lambda sandbox would, against the local AWS and a
local Bedrock that answers like the real one does in size and time: each answer carries a
PNG of about IMAGE_MB megabytes (part noise, so it does not compress away; base64 in JSON,
as Bedrock sends it) after a latency of LATENCY_S +/- JITTER_S seconds. Per calls-in-flight
setting (CHUNK_CONCURRENCY) it reports the process's peak RSS (what Lambda reports as Max
Memory Used, the runtime aside), its RSS after imports, and the CPU seconds per image. From
those it suggests the smallest memory size that holds the peak with 50% headroom (the
Lambda runtime's own memory, larger PNGs than assumed).

The image size and the latency are assumptions (Bedrock publishes neither; see
src/imagebatch/data/throughput.json): a 1-megapixel PNG from SD3.5 Large is typically
1-2 MB. Run: `.venv/bin/python bench/bench_chunk_memory.py [IN_FLIGHT ...]`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The child process (the measured "Lambda") must import what the handler imports and no
    # more, so everything else loads inside the functions that use it.
    from imagebatch_local.fakes.renderers import RenderedImage, RenderRequest

REPO = Path(__file__).resolve().parents[1]
MODEL = "stability.sd3-5-large-v1:0"
IMAGES = 50
IMAGE_MB = 1.5
LATENCY_S = 6.0
JITTER_S = 1.5
DEFAULT_IN_FLIGHT = (6, 16, 50)
HEADROOM = 1.5


def payload_png(width: int, height: int, megabytes: float) -> bytes:
    """A PNG of the size whose encoded length is about `megabytes`: noise rows (which do not
    compress) over a flat rest."""
    from PIL import Image

    noise_rows = min(height, max(1, round(megabytes * 1e6 / (width * 3))))
    image = Image.new("RGB", (width, height), (128, 128, 128))
    noise = Image.frombytes(
        "RGB", (width, noise_rows), random.Random(0).randbytes(width * 3 * noise_rows)
    )
    image.paste(noise, (0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class PayloadRenderer:
    """Answers after a Bedrock-like latency with a Bedrock-sized PNG (the same one each time:
    the chunk's memory is what is measured, not this server's)."""

    def __init__(self, megabytes: float, latency_s: float, jitter_s: float) -> None:
        self._megabytes = megabytes
        self._latency = latency_s
        self._jitter = jitter_s
        self._pngs: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()
        self._random = random.Random(1)

    def render(self, requests: Sequence[RenderRequest]) -> list[RenderedImage]:
        from imagebatch_local.fakes.renderers import RenderedImage

        with self._lock:
            delay = self._latency + self._random.uniform(-self._jitter, self._jitter)
            for request in requests:
                size = (request.width, request.height)
                if size not in self._pngs:
                    self._pngs[size] = payload_png(*size, self._megabytes)
        time.sleep(max(0.0, delay))
        return [
            RenderedImage(png=self._pngs[(r.width, r.height)], seed=r.seed, seconds=delay)
            for r in requests
        ]


def peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM). Not ru_maxrss: across exec Linux carries
    over the forked parent's RSS into it, so a child of a large parent reads large."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(batch_id: str, bucket: str, in_flight: int, memory_mb: int) -> dict[str, Any]:
    """The chunk handler in this (fresh) process, as a Lambda sandbox runs it."""
    from imagebatch_local.cloud.lambda_runtime import LocalLambdaContext

    from imagebatch.aws.s3_store import chunk_key
    from imagebatch.models.records import ChunkRef, ChunkTask

    spec = importlib.util.spec_from_file_location(
        "generate_chunk_app", REPO / "functions" / "generate_chunk" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    after_imports = _rss_mb()
    event = ChunkTask(
        batch_id=batch_id,
        bucket=bucket,
        chunk=ChunkRef(chunk_id="00000", key=chunk_key(batch_id, "00000"), images=IMAGES),
        chunk_concurrency=in_flight,
    ).model_dump()
    context = LocalLambdaContext("generate", memory_mb, 600)
    cpu_before, started = sum(os.times()[:2]), time.perf_counter()
    result = module.handler(event, context)
    return {
        "in_flight": in_flight,
        "succeeded": result["succeeded"],
        "wall_s": time.perf_counter() - started,
        "cpu_s": sum(os.times()[:2]) - cpu_before,
        "after_imports_mb": after_imports,
        "peak_mb": peak_rss_mb(),
    }


def measure(in_flight_settings: Sequence[int]) -> list[dict[str, Any]]:
    """One chunk per setting, each in a fresh process; the figures per setting."""
    from imagebatch_local.cloud.session import LocalOptions, local_aws
    from imagebatch_local.fakes.bedrock_server import LocalBedrock

    from imagebatch.aws.s3_store import BatchStore
    from imagebatch.models.records import ChunkFile, ImageJob

    logging.basicConfig(level=logging.WARNING)
    results = []
    with (
        local_aws(LocalOptions(template=REPO / "template.yaml", renderer="null")) as aws,
        LocalBedrock(
            PayloadRenderer(IMAGE_MB, LATENCY_S, JITTER_S), render_short_side=1024
        ) as bedrock,
    ):
        memory_mb = next(
            f.memory_mb for f in aws.stack.functions if f.logical_id == "GenerateChunkFunction"
        )
        store = BatchStore(aws.s3(), aws.bucket)
        for in_flight in in_flight_settings:
            batch_id = f"memory-{in_flight}"
            aws.ledger().create_batch(
                batch_id, {"images_total": IMAGES, "status": "RUNNING", "backend": "bedrock"}
            )
            jobs = [
                ImageJob(
                    image_id=f"m-{n:03d}-1",
                    item_id=f"m-{n:03d}",
                    index=1,
                    line=n + 2,
                    prompt=f"studio product photo {n}",
                    width=1024,
                    height=1024,
                    seed=n + 1,
                    model=MODEL,
                )
                for n in range(IMAGES)
            ]
            store.put_chunk(
                ChunkFile(
                    batch_id=batch_id,
                    chunk_id="00000",
                    backend="bedrock",
                    output_prefix="outputs/",
                    images=jobs,
                )
            )
            environment = {
                **os.environ,
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.endpoint_url,
                "CHUNK_CONCURRENCY": str(in_flight),
                "POWERTOOLS_LOG_LEVEL": "ERROR",
            }
            command = [sys.executable, __file__, "--child", batch_id, aws.bucket]
            done = subprocess.run(
                [*command, str(in_flight), str(memory_mb)],
                capture_output=True,
                text=True,
                check=False,
                env=environment,
            )
            if done.returncode:
                raise SystemExit(f"chunk with {in_flight} in flight failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["configured_mb"] = memory_mb
            results.append(result)
    return results


def suggested_memory_mb(peak_mb: float) -> int:
    """The smallest Lambda memory (a multiple of 64 MB, at least 128) over peak x headroom."""
    needed = peak_mb * HEADROOM
    return max(128, int(-(-needed // 64) * 64))


def main(argv: list[str]) -> None:
    if len(argv) > 1 and argv[1] == "--child":
        print(json.dumps(child(argv[2], argv[3], int(argv[4]), int(argv[5]))))
        return
    settings = [int(a) for a in argv[1:]] or list(DEFAULT_IN_FLIGHT)
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    print(
        f"chunk memory bench: {IMAGES} images of 1024x1024, ~{IMAGE_MB} MB PNG each, latency "
        f"{LATENCY_S} +/- {JITTER_S} s; load {load}"
    )
    for result in measure(settings):
        print(
            f"  {result['in_flight']:>3} in flight: peak RSS {result['peak_mb']:.0f} MB "
            f"(after imports {result['after_imports_mb']:.0f} MB), CPU "
            f"{result['cpu_s'] / IMAGES * 1000:.1f} ms/image, chunk {result['wall_s']:.1f} s, "
            f"{result['succeeded']} made -> memory {suggested_memory_mb(result['peak_mb'])} MB "
            f"(configured {result['configured_mb']} MB)"
        )


if __name__ == "__main__":
    main(sys.argv)
