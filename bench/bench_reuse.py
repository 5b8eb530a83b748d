"""What does reuse cost and save? A 10,000-image manifest uploaded, then uploaded again with one
line edited, to one local AWS (null renderer), as a team re-uploads a fixed manifest.

Reports, for the second batch: images made and reused (target: made 1, reused 9,999), the
inference reuse saved, what the lookups and copies cost per 1,000 reused images beside their
floor (one eventually consistent index read, one HeadObject and one CopyObject per image), and
its wall time against the first batch's. Costs come from the ledger's counted operations
priced with data/aws_prices.json (us-east-1), so they do not depend on the machine's load;
wall times do (the load is printed).

Run: `make bench` (10,000) or `.venv/bin/python bench/bench_reuse.py [N]`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import Usage, price_usage
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.money import format_usd

MODEL = "stability.sd3-5-large-v1:0"
DEFAULT_IMAGES = 10_000
REPO = Path(__file__).resolve().parents[1]


def write_manifest(path: Path, images: int, *, edited: int | None = None) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(
            json.dumps(
                {"batch": {"backend": "bedrock", "model": MODEL, "max_cost_usd": images // 10 + 1}}
            )
            + "\n"
        )
        for i in range(images):
            prompt = f"studio product photo {i}, white background"
            if i == edited:
                prompt += ", fixed"
            handle.write(json.dumps({"id": f"s-{i:07d}", "prompt": prompt}) + "\n")


def load() -> str:
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def per_1000(amount: Decimal, images: int) -> str:
    return format_usd(int(amount * 1000 / max(1, images)))


# Kept whole (64 lines): one run and its report, read top to bottom as the output is.
def main(argv: list[str]) -> None:
    from imagebatch_local.cloud.session import LocalOptions, local_aws

    images = int(argv[1]) if len(argv) > 1 else DEFAULT_IMAGES
    logging.basicConfig(level=logging.WARNING)
    print(f"reuse bench: {images:,} images, null renderer, cpus {os.cpu_count()}, load {load()}")
    prices = load_aws_prices().region("us-east-1")
    with tempfile.TemporaryDirectory() as scratch:
        first_manifest = Path(scratch) / "catalog.jsonl"
        edited_manifest = Path(scratch) / "catalog-one-prompt-fixed.jsonl"
        write_manifest(first_manifest, images)
        write_manifest(edited_manifest, images, edited=images // 2)
        options = LocalOptions(template=REPO / "template.yaml", renderer="null")
        with local_aws(options) as aws:
            runs: list[tuple[BatchRecord, float]] = []
            for manifest in (first_manifest, edited_manifest):
                started = time.perf_counter()
                batch_id = aws.upload_manifest(manifest)
                aws.wait_for_batch(batch_id, timeout_s=4 * 3600)
                aws.wait_for_execution(batch_id, timeout_s=3600)
                summary = aws.ledger().get_batch(batch_id)
                assert summary is not None
                runs.append((summary, time.perf_counter() - started))
    (first, first_wall), (second, second_wall) = runs
    reused = second.images_reused
    made = second.images_succeeded - reused
    print(
        f"first batch:  {first.images_succeeded:,} made, {first_wall:.1f} s wall, inference "
        f"{format_usd(first.cost_micro_usd)}, charged {format_usd(first.spent_micro_usd)}"
    )
    print(
        f"second batch: images made {made:,}, images reused {reused:,} (target 1 and "
        f"{images - 1:,}); {second_wall:.1f} s wall ({second_wall / first_wall:.2f} x the "
        f"first); inference {format_usd(second.cost_micro_usd)}, saved by reuse "
        f"{format_usd(second.reuse_saved_micro_usd)}, charged {format_usd(second.spent_micro_usd)}"
    )
    one, two = Usage.from_summary(first), Usage.from_summary(second)
    # What reuse costs the second batch: every read unit it counted (the index reads of
    # ingest and the chunks, which the first batch paid too and found nothing, and the few
    # summary reads: an upper bound), the HeadObjects beyond the first batch's GETs, and a
    # CopyObject per reused image (in place of the PUT a made image has).
    lookups = Usage(
        ddb_read_units=two.ddb_read_units,
        s3_get_requests=max(0, two.s3_get_requests - one.s3_get_requests),
    )
    copies = Usage(s3_put_requests=reused)
    measured = price_usage(lookups + copies, prices).total
    floor = price_usage(
        Usage(ddb_read_units=(reused + 1) // 2, s3_get_requests=reused, s3_put_requests=reused),
        prices,
    ).total
    print(
        f"lookups and copies per 1,000 reused images: {per_1000(measured, reused)} "
        f"(read units {lookups.ddb_read_units:,}, HeadObjects {lookups.s3_get_requests:,}, "
        f"CopyObjects {reused:,}); floor {per_1000(floor, reused)} (half a read unit, one "
        "HeadObject, one CopyObject per image)"
    )
    for name, summary in (("first", first), ("second", second)):
        costs = price_usage(Usage.from_summary(summary), prices)
        print(
            f"{name:>6}: orchestration {per_1000(costs.orchestration, images)} and storage "
            f"{per_1000(costs.storage, images)} per 1,000 images"
        )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main(sys.argv)
