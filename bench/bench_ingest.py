"""Ingest at scale: validate and chunk a generated manifest of LINES lines (default 100,000).

Measures the ingest domain function (plan_batch: one streaming pass that validates every
line and spools chunk files) on a file stream, as the Lambda reads an S3 body. Reports
seconds and the process's peak RSS. Targets: 100,000 lines under 10 s and 256 MB;
1,000,000 lines (ten times the largest manifest so far) under 15 s and 128 MB.
Run: `make bench` or `.venv/bin/python bench/bench_ingest.py [LINES]`, e.g. 1000000.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.planning.plan import plan_batch

MODEL = "stability.sd3-5-large-v1:0"
# lines -> (seconds, MB): the target for a manifest of at least that many lines
TARGETS = {100_000: (10.0, 256.0), 1_000_000: (15.0, 128.0)}


def write_manifest(path: Path, lines: int) -> None:
    sizes = [(1024, 1024), (1344, 768), (768, 1344)]
    with path.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps({"batch": {"backend": "bedrock", "model": MODEL}}) + "\n")
        for i in range(lines - 1):
            width, height = sizes[i % 3]
            item = {
                "id": f"sku-{i:07d}",
                "prompt": f"studio product photo of item {i}, white background, soft light",
                "width": width,
                "height": height,
                "tags": {"catalog": "spring", "row": str(i % 100)},
            }
            if i % 4 == 0:
                item["seed"] = i
            handle.write(json.dumps(item) + "\n")


def main(lines: int) -> None:
    catalogue = load_catalogue()
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / "big.jsonl"
        write_manifest(manifest, lines)
        spool = Path(scratch) / "spool"
        spool.mkdir()
        rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        with manifest.open("rb") as stream:
            plan = plan_batch(
                stream,
                "manifests/big.jsonl",
                batch_id="bench-0",
                catalogue=catalogue,
                chunk_size=50,
                spool=spool,
            )
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size_mb = manifest.stat().st_size / 1e6
    print(
        f"ingest: {lines:,} lines ({size_mb:.1f} MB) -> {plan.images_total:,} images in "
        f"{len(plan.chunks):,} chunks, {plan.invalid_lines} invalid: {seconds:.2f} s, "
        f"peak RSS {peak_mb:.0f} MB (before the pass {rss_before_mb:.0f} MB)"
    )
    size = max((n for n in TARGETS if n <= lines), default=min(TARGETS))
    target_s, target_mb = TARGETS[size]
    ok = seconds < target_s and peak_mb < target_mb
    print(
        f"ingest target for {size:,} lines (<{target_s:.0f} s, <{target_mb:.0f} MB): "
        f"{'met' if ok else 'MISSED'}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
