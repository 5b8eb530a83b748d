"""The whole local pipeline against the bare model: what does the plumbing cost?

1,000 images of 64x64 at 1 step: once through `local_aws` (manifest upload, ingest Lambda,
Step Functions Distributed Map, chunk Lambdas calling the local Bedrock over HTTP, PNGs to
S3, ledger transactions, finalize), once through the bare diffusers pipeline in this process
(same prompts, seeds, size and steps, batch 1, PNG encode included). Target ratio: < 1.5.
Run: `make bench` or `.venv/bin/python bench/bench_local_pipeline.py [IMAGES]`.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bare_pipeline import run_bare
from imagebatch_local.cloud.session import LocalOptions, local_aws

from imagebatch.manifest.schema import ManifestItem
from imagebatch.planning.routing import seed_for

MODEL = "stability.sd3-5-large-v1:0"


def main(images: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    items = [
        {"id": f"p-{i:05d}", "prompt": f"product photo {i}, studio light"} for i in range(images)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / "bench.jsonl"
        header = {"batch": {"backend": "bedrock", "model": MODEL, "max_cost_usd": images // 10 + 1}}
        manifest.write_text("\n".join(json.dumps(x) for x in [header, *items]) + "\n")
        with local_aws(LocalOptions()) as aws:
            started = time.perf_counter()
            batch_id = aws.upload_manifest(manifest)
            summary = aws.wait_for_batch(batch_id, timeout_s=3600)
            pipeline_s = time.perf_counter() - started
            calls = Counter(call.function.rsplit("-", 1)[-1] for call in aws.runtime.invocations)
            seconds_by_function: dict[str, float] = {}
            for call in aws.runtime.invocations:
                name = call.function.rsplit("-", 1)[-1]
                seconds_by_function[name] = seconds_by_function.get(name, 0.0) + call.seconds
            rendered = aws.bedrock.stats.images_returned
    assert summary.status == "SUCCEEDED", summary
    # The seeds the pipeline used: the bare run makes the very same images.
    seeds = [
        seed_for(
            ManifestItem.model_validate({**item, "model": MODEL, "width": 1024, "height": 1024}), 1
        )
        for item in items
    ]
    bare_s = run_bare([str(item["prompt"]) for item in items], seeds)
    ratio = pipeline_s / bare_s
    print(
        f"local pipeline: {images} images in {pipeline_s:.1f} s "
        f"({images / pipeline_s:.1f} images/s), {rendered} rendered by the local Bedrock"
    )
    print(f"bare diffusers: {images} images in {bare_s:.1f} s ({images / bare_s:.1f} images/s)")
    print(f"ratio pipeline/bare: {ratio:.2f} (target < 1.5: {'met' if ratio < 1.5 else 'MISSED'})")
    print(
        "in-process Lambda time: "
        + ", ".join(
            f"{name} {calls[name]} calls {seconds_by_function[name]:.1f} s"
            for name in sorted(calls)
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
