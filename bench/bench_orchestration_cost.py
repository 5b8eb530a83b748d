"""What does the plumbing cost per 1,000 images, next to its floor? From the ledger's counts.

Runs IMAGES images (default 1,000 and 10,000) through the local AWS (`local_aws`: template,
handlers, state machine, local Bedrock with the null renderer) and prices the operations the
ledger counted (Step Functions transitions, Lambda requests and billed GB-s, DynamoDB units,
S3 requests, bytes stored) with src/imagebatch/data/aws_prices.json, per 1,000 images made.

The floor: one S3 PUT (the image) and one ledger write unit (its record) per image, at list
prices. Target: the Bedrock-path projection at 6 s per image at most 1.25x the floor.

Locally the chunk Lambdas answer at once (null renderer), so their measured duration is this
machine's CPU, not a wait. On Bedrock the chunk Lambda is billed while its calls are in
flight; the projection replaces the measured chunk duration with

    billed = max(wait, first answer + CPU)   per chunk of C images, k calls in flight, where
    wait = C / k x latency + jitter,  first answer = latency - jitter,
    CPU = C x cpu_per_image / (memory / 1769 MB)   (Lambda's CPU share below one vCPU)

with latency from throughput.json (an assumption: Bedrock publishes none), jitter and
cpu_per_image measured by bench/bench_chunk_memory.py. Two quotas are projected: the batch's
own plan (the catalogue's default quota of 60 images/min: a few calls in flight), and a
quota large enough for a whole chunk's calls at once.
Run: `make bench` or `.venv/bin/python bench/bench_orchestration_cost.py [IMAGES ...]
[--chunk-size N] [--chunk-concurrency K] [--chunk-memory MB] [--chunk-cpu-ms MS]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from imagebatch_local.cloud.session import LocalOptions, local_aws

from imagebatch.costs.estimate import load_speed_assumptions
from imagebatch.costs.prices import RegionPrices, load_aws_prices
from imagebatch.costs.usage import Usage, price_usage
from imagebatch.models.batch_record import BatchRecord

REPO = Path(__file__).resolve().parents[1]
MODEL = "stability.sd3-5-large-v1:0"
TARGET_RATIO = Decimal("1.25")
# bench/bench_chunk_memory.py, 50 images of ~1.5 MB, 6/16/50 in flight: 14.6-14.8 ms CPU per
# image (load average 5.7); the answers' latency spread there is +/- JITTER_S.
CHUNK_CPU_MS = Decimal("14.7")
JITTER_S = Decimal("1.5")
LAMBDA_MB_PER_VCPU = 1769


def _usd(micro: Decimal) -> str:
    return f"${micro / 1_000_000:.6f}"


def floor_per_1000(prices: RegionPrices) -> Decimal:
    """One S3 PUT and one DynamoDB write unit per image, 1,000 images, in micro-dollars."""
    return price_usage(Usage(s3_put_requests=1000, ddb_write_units=1000), prices).total


def run_batch(images: int, parameters: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / f"cost-{images}.jsonl"
        lines = [
            {"batch": {"backend": "bedrock", "model": MODEL, "max_cost_usd": images // 10 + 1}}
        ] + [{"id": f"o-{i:06d}", "prompt": f"product photo {i}"} for i in range(images)]
        manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        options = LocalOptions(
            template=REPO / "template.yaml",
            renderer="null",
            parameter_overrides=parameters,
        )
        with local_aws(options) as aws:
            started = time.perf_counter()
            batch_id = aws.upload_manifest(manifest)
            summary = aws.wait_for_batch(batch_id, timeout_s=4 * 3600)
            seconds = time.perf_counter() - started
            chunk_function = next(
                f for f in aws.stack.functions if f.logical_id == "GenerateChunkFunction"
            )
            chunk_seconds = sum(
                i.seconds for i in aws.runtime.invocations if i.function == chunk_function.name
            )
            return {
                "summary": summary,
                "seconds": seconds,
                "memory_mb": chunk_function.memory_mb,
                "chunk_size": int(aws.stack.parameters["ChunkSize"]),
                "ceiling": int(aws.stack.parameters["ChunkConcurrency"]),
                "chunk_mb_ms": int(chunk_seconds * 1000) * chunk_function.memory_mb,
            }


def projected_chunk_mb_ms(
    images: int, in_flight: int, memory_mb: int, chunk_size: int, cpu_ms: Decimal
) -> int:
    """Billed MB-ms of the chunk Lambdas for `images` on Bedrock (see the module docstring)."""
    latency = load_speed_assumptions().bedrock.seconds_per_image
    share = min(Decimal(1), Decimal(memory_mb) / LAMBDA_MB_PER_VCPU)
    total = Decimal(0)
    for start in range(0, images, chunk_size):
        size = min(chunk_size, images - start)
        k = min(in_flight, size)
        wait = Decimal(size) / k * latency + JITTER_S
        cpu = size * cpu_ms / 1000 / share
        billed = max(wait, latency - JITTER_S + cpu)
        total += math.ceil(billed * 1000) * memory_mb
    return int(total)


def report(run: dict[str, Any], prices: RegionPrices, cpu_ms: Decimal) -> None:
    summary: BatchRecord = run["summary"]
    assert summary.status == "SUCCEEDED", summary
    made = summary.images_succeeded
    usage = Usage.from_summary(summary)
    costs = price_usage(usage, prices)
    floor = floor_per_1000(prices)
    orchestration = costs.orchestration * 1000 / made
    print(
        f"{made:,} images (64x64 null renderer) in {run['seconds']:.0f} s through the local AWS; "
        f"chunks of {run['chunk_size']}, {summary.chunks_total} chunks, chunk Lambda "
        f"{run['memory_mb']} MB; plan: {summary.map_max_concurrency} chunk(s) at once x "
        f"{summary.chunk_concurrency} calls (quota {summary.in_flight} in flight)"
    )
    print("  counted by the ledger:", json.dumps(usage.model_dump()))
    print("  per 1,000 images:")
    for name, value in costs.lines.items():
        print(f"    {name:<26} {_usd(value * 1000 / made)}")
    print(
        f"  orchestration {_usd(orchestration)} ({orchestration / floor:.2f}x the floor "
        f"{_usd(floor)}: 1 S3 PUT + 1 write unit per image) + storage (1 month) "
        f"{_usd(costs.storage * 1000 / made)}"
    )
    rest_mb_ms = usage.lambda_mb_ms - run["chunk_mb_ms"]
    quota_k = int(summary.chunk_concurrency or 0)
    whole_chunk_k = min(run["ceiling"], run["chunk_size"])
    for label, k in (("default quota", quota_k), ("quota for a whole chunk", whole_chunk_k)):
        chunk_mb_ms = projected_chunk_mb_ms(made, k, run["memory_mb"], run["chunk_size"], cpu_ms)
        projected = price_usage(
            usage.model_copy(update={"lambda_mb_ms": rest_mb_ms + chunk_mb_ms}), prices
        )
        per_1000 = projected.orchestration * 1000 / made
        wait = (projected.lines["lambda_duration"]) * 1000 / made
        ratio = per_1000 / floor
        verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
        print(
            f"  Bedrock projection, {label} ({k} calls in flight per chunk, {run['memory_mb']} "
            f"MB, {cpu_ms} ms CPU/image): Lambda {_usd(wait)}, orchestration {_usd(per_1000)} "
            f"= {ratio:.2f}x the floor (target <= {TARGET_RATIO}x: {verdict})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=int, default=[1_000, 10_000])
    parser.add_argument("--chunk-size", type=int, help="template ChunkSize (default 50)")
    parser.add_argument("--chunk-concurrency", type=int, help="template ChunkConcurrency")
    parser.add_argument("--chunk-memory", type=int, help="template ChunkMemorySize (MB)")
    parser.add_argument("--chunk-cpu-ms", type=Decimal, default=CHUNK_CPU_MS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    prices = load_aws_prices().region("us-east-1")
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        print(f"orchestration cost bench; load {' '.join(loadavg.read().split()[:3])}")
    overrides = {
        name: str(value)
        for name, value in (
            ("ChunkSize", args.chunk_size),
            ("ChunkConcurrency", args.chunk_concurrency),
            ("ChunkMemorySize", args.chunk_memory),
        )
        if value is not None
    }
    for images in args.images:
        report(run_batch(images, overrides), prices, args.chunk_cpu_ms)


if __name__ == "__main__":
    main()
