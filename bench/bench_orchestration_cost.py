"""What does the plumbing cost per 1,000 images? Orchestration + storage from the ledger.

Runs IMAGES (default 10,000) images of 64x64 at 1 step through the local AWS (`local_aws`:
template, handlers, state machine, local Bedrock), then prices the operations the ledger
counted (Step Functions transitions, Lambda requests and billed GB-s, DynamoDB units, S3
requests, bytes stored) with src/imagebatch/data/aws_prices.json, per 1,000 images made.
Baseline: one Standard workflow execution per image (8 transitions: an assumed per-image
workflow, see bench/README.md) with one Lambda request per image and the same S3/DynamoDB
work. Target: <= $0.007 per 1,000.

The chunk Lambdas' billed duration here is how long they waited on the local model; on
Bedrock they wait on Bedrock, so a projection with throughput.json's Bedrock latency is
printed beside it.
Run: `make bench` or `.venv/bin/python bench/bench_orchestration_cost.py [IMAGES]`.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from imagebatch_cli.local.cloud.pipeline import LocalOptions, local_aws

from imagebatch.costs.estimate import load_speed_assumptions
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import Usage, price_usage

MODEL = "stability.sd3-5-large-v1:0"
TARGET_PER_1000 = Decimal("0.007")
STANDARD_TRANSITIONS_PER_IMAGE = 8


def _usd(micro: Decimal) -> str:
    return f"${micro / 1_000_000:.6f}"


def main(images: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    prices = load_aws_prices().region("us-east-1")
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / "orchestration.jsonl"
        header = {"batch": {"backend": "bedrock", "model": MODEL}}
        lines = [header] + [
            {"id": f"o-{i:05d}", "prompt": f"product photo {i}"} for i in range(images)
        ]
        manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        with local_aws(LocalOptions()) as aws:
            started = time.perf_counter()
            batch_id = aws.upload_manifest(manifest)
            summary = aws.wait_for_batch(batch_id, timeout_s=7200)
            seconds = time.perf_counter() - started
            chunk_memory = next(
                f.memory_mb for f in aws.stack.functions if f.logical_id == "GenerateChunkFunction"
            )
            chunk_size = int(aws.stack.parameters["ChunkSize"])
            concurrency = int(aws.stack.parameters["ChunkConcurrency"])
    assert summary["status"] == "SUCCEEDED", summary
    made = int(summary["images_succeeded"])
    usage = Usage.from_summary(summary)
    costs = price_usage(usage, prices)
    per_1000 = (costs.orchestration + costs.storage) * 1000 / made
    verdict = "met" if per_1000 / 1_000_000 <= TARGET_PER_1000 else "MISSED"
    print(
        f"{made} images of 64x64 (1 step) in {seconds:.0f} s through the local AWS; "
        f"chunks of {chunk_size}, {summary['chunks_total']} chunks"
    )
    print("counted by the ledger:", json.dumps(usage.model_dump()))
    print("per 1,000 images, from the ledger's counted operations:")
    for name, value in costs.lines.items():
        print(f"  {name:<26} {_usd(value * 1000 / made)}")
    print(
        f"  orchestration {_usd(costs.orchestration * 1000 / made)} + storage (1 month) "
        f"{_usd(costs.storage * 1000 / made)} = {_usd(per_1000)} "
        f"(target <= ${TARGET_PER_1000}: {verdict})"
    )
    # The same images as one Standard execution each: 8 transitions and 1 Lambda request per
    # image instead of per chunk; S3, DynamoDB and storage the same as measured.
    baseline_usage = usage.model_copy(
        update={
            "sfn_transitions": STANDARD_TRANSITIONS_PER_IMAGE * made,
            "lambda_requests": made,
        }
    )
    baseline = price_usage(baseline_usage, prices)
    baseline_per_1000 = (baseline.orchestration + baseline.storage) * 1000 / made
    print(
        f"one Standard execution per image ({STANDARD_TRANSITIONS_PER_IMAGE} transitions + 1 "
        f"Lambda request per image): {_usd(baseline_per_1000)} per 1,000 "
        f"({baseline_per_1000 / per_1000:.0f}x)"
    )
    waiting = costs.lines["lambda_duration"] * 1000 / made
    print(
        f"  of which chunk Lambdas waiting on the model (billed duration): {_usd(waiting)}; "
        f"without it {_usd(per_1000 - waiting)} (an endpoint path where the chunk Lambda "
        "only submits would pay about this)"
    )
    # On Bedrock the chunk Lambda is billed while it waits: seconds_per_image / concurrency
    bedrock = load_speed_assumptions().bedrock
    waiting_mb_ms = int(bedrock.seconds_per_image * 1000 / concurrency) * chunk_memory * made
    projected = price_usage(usage.model_copy(update={"lambda_mb_ms": waiting_mb_ms}), prices)
    projected_per_1000 = (projected.orchestration + projected.storage) * 1000 / made
    print(
        f"projected on Bedrock (chunk Lambda waits {bedrock.seconds_per_image} s/image / "
        f"{concurrency} in flight at {chunk_memory} MB): {_usd(projected_per_1000)} per 1,000"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
