"""Does the pipeline scale linearly? N images through the local AWS with the null renderer.

Each size runs in a fresh process (so its peak RSS is its own): a manifest of N items is
uploaded to the local S3, and the whole pipeline runs as deployed (ingest Lambda, the state
machine's Distributed Map of chunk Lambdas calling the local Bedrock over HTTP, PNGs to S3,
ledger transactions, finalize, contact sheet). The null renderer answers at once, so what is
measured is the pipeline itself: moto, botocore, the handlers, the state machine interpreter.

Reports wall time (upload to the execution's end, contact sheet included), images per second,
seconds per image, peak RSS, and where the time went (each function's in-process time).
Targets: seconds per image at the largest size within 1.5x of that at 1,000; peak RSS at
100,000 under 2 GB; 100,000 in under 30 minutes on 2 cores.

Run: `make bench` (1,000 and 10,000) or
`.venv/bin/python bench/bench_scale.py [N ...]`, e.g. `... bench/bench_scale.py 100000`.
`IMAGEBATCH_BENCH_REUSE=false` deploys the local stack with ReuseImages=false (no lookups): the
pair on/off is what reuse costs a batch with nothing to reuse (bench/README.md).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import Usage, price_usage

MODEL = "stability.sd3-5-large-v1:0"
DEFAULT_SIZES = (1_000, 10_000)
LINEARITY_TARGET = 1.5
RSS_TARGET_MB = 2048
WALL_TARGET_S = 1800
REPO = Path(__file__).resolve().parents[1]


def write_manifest(path: Path, images: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(
            json.dumps(
                {"batch": {"backend": "bedrock", "model": MODEL, "max_cost_usd": images // 10 + 1}}
            )
            + "\n"
        )
        for i in range(images):
            item = {"id": f"s-{i:07d}", "prompt": f"studio product photo {i}, white background"}
            handle.write(json.dumps(item) + "\n")


def peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM; ru_maxrss would include what the forked
    parent had resident before exec)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class RssSampler:
    """This process's resident set, sampled each `interval` s on a thread: the largest seen
    so far (the kernel's ru_maxrss gives only the overall peak)."""

    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._largest = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(self._interval):
            with open("/proc/self/statm", encoding="ascii") as statm:
                resident = int(statm.read().split()[1]) * page
            with self._lock:
                self._largest = max(self._largest, resident)

    def take_mb(self) -> float:
        """The largest RSS since the last call, in MB; starts a new window."""
        with self._lock:
            largest, self._largest = self._largest, 0
        return largest / 2**20

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_one(images: int) -> dict[str, Any]:
    """One batch of `images` in this process; the figures as a dict."""
    from imagebatch_local.cloud.session import LocalOptions, local_aws

    logging.basicConfig(level=logging.WARNING)
    # moto's state machine interpreter reports a failed Map item only at debug level.
    logging.getLogger("moto.stepfunctions.parser.asl.component.state.exec.state_map").setLevel(
        logging.DEBUG
    )
    rss = RssSampler()
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / f"scale-{images}.jsonl"
        write_manifest(manifest, images)
        options = LocalOptions(
            template=REPO / "template.yaml",
            renderer="null",
            parameter_overrides={"ReuseImages": os.environ.get("IMAGEBATCH_BENCH_REUSE", "true")},
        )
        with local_aws(options) as aws:
            started = time.perf_counter()
            batch_id = aws.upload_manifest(manifest)
            summary = aws.wait_for_batch(batch_id, timeout_s=4 * 3600)
            settled = time.perf_counter() - started
            rss_settled = rss.take_mb()
            execution = aws.wait_for_execution(batch_id, timeout_s=3600)
            wall = time.perf_counter() - started
            rss_sheet = rss.take_mb()
            by_function: dict[str, float] = defaultdict(float)
            calls: dict[str, int] = defaultdict(int)
            for invocation in aws.runtime.invocations:
                name = invocation.function.removeprefix(f"{aws.stack.name}-")
                by_function[name] += invocation.seconds
                calls[name] += 1
            rss.stop()
            sheet = aws.s3().list_objects_v2(Bucket=aws.bucket, Prefix=f"reports/{batch_id}/")
            reports = [obj["Key"].rsplit("/", 1)[-1] for obj in sheet.get("Contents", [])]
    return {
        "images": images,
        "status": summary.status,
        "execution": execution,
        "made": summary.images_succeeded,
        "chunks": summary.chunks_total,
        "wall_s": wall,
        "settled_s": settled,
        "peak_rss_mb": peak_rss_mb(),
        "rss_to_settled_mb": rss_settled,
        "rss_contact_sheet_mb": rss_sheet,
        "cpu_s": sum(os.times()[:2]),
        "function_s": {k: round(v, 1) for k, v in sorted(by_function.items())},
        "function_calls": dict(sorted(calls.items())),
        "contact_sheets": sum(1 for r in reports if r.startswith("contact-sheet")),
        "index_pages": sum(1 for r in reports if r.startswith("index")),
        "usage": Usage.from_summary(summary).model_dump(),
    }


def measure(images: int) -> dict[str, Any]:
    """`run_one` in a fresh interpreter: peak RSS and imports are that size's alone. Its logs
    (the handlers' and moto's) go to a file, named if the run fails."""
    log = Path(tempfile.gettempdir()) / f"bench_scale-{images}-{os.getpid()}.log"
    with log.open("w", encoding="utf-8") as log_file:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(images)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            check=False,
        )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith('{"images"'):
        raise SystemExit(f"{images} images failed (exit {done.returncode}); log: {log}")
    log.unlink()
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def report(result: dict[str, Any]) -> None:
    images, wall = result["images"], result["wall_s"]
    print(
        f"{images:>7,} images: {wall:8.1f} s wall ({result['settled_s']:.1f} s to settled), "
        f"{images / wall:6.1f} images/s, {wall / images * 1000:6.2f} ms/image, "
        f"peak RSS {result['peak_rss_mb']:,.0f} MB, CPU {result['cpu_s']:.0f} s; "
        f"{result['status']}, {result['made']:,} made in {result['chunks']:,} chunks, "
        f"{result['contact_sheets']} contact sheet(s), {result['index_pages']} index page(s)"
    )
    prices = load_aws_prices().region("us-east-1")
    costs = price_usage(Usage.model_validate(result["usage"]), prices)
    per_1000 = Decimal(1000) / result["made"]
    print(
        f"         per 1,000 images from the ledger's counts: orchestration "
        f"${costs.orchestration * per_1000 / 1_000_000:.6f}, storage (1 month) "
        f"${costs.storage * per_1000 / 1_000_000:.6f}"
    )
    print(
        f"         largest RSS until settled {result['rss_to_settled_mb']:,.0f} MB, "
        f"during the contact sheet {result['rss_contact_sheet_mb']:,.0f} MB; "
        f"in-process function time (s): {json.dumps(result['function_s'])}"
    )


def main(argv: list[str]) -> None:
    if len(argv) > 2 and argv[1] == "--one":
        # The handlers log to stdout; the figures are the last line, so logs go to stderr.
        figures = sys.stdout
        sys.stdout = sys.stderr
        result = run_one(int(argv[2]))
        print(json.dumps(result), file=figures)
        return
    sizes = [int(a) for a in argv[1:]] or list(DEFAULT_SIZES)
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        load = loadavg.read().split()[:3]
    print(f"scale bench: null renderer, chunks of 50, cpus {os.cpu_count()}, load {' '.join(load)}")
    results = [measure(images) for images in sorted(sizes)]
    for result in results:
        report(result)
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        print(f"load average after: {' '.join(loadavg.read().split()[:3])}")
    smallest, largest = results[0], results[-1]
    per_small = smallest["wall_s"] / smallest["images"]
    per_large = largest["wall_s"] / largest["images"]
    ratio = per_large / per_small
    if len(results) > 1:
        verdict = "met" if ratio <= LINEARITY_TARGET else "MISSED"
        print(
            f"seconds per image at {largest['images']:,} / at {smallest['images']:,}: "
            f"{ratio:.2f} (target <= {LINEARITY_TARGET}: {verdict})"
        )
    for result in results:
        if result["images"] >= 100_000:
            rss_ok = result["peak_rss_mb"] < RSS_TARGET_MB
            wall_ok = result["wall_s"] < WALL_TARGET_S
            print(
                f"{result['images']:,}: peak RSS {result['peak_rss_mb']:,.0f} MB (target < "
                f"{RSS_TARGET_MB:,}: {'met' if rss_ok else 'MISSED'}), wall "
                f"{result['wall_s'] / 60:.1f} min (target < 30: {'met' if wall_ok else 'MISSED'})"
            )


if __name__ == "__main__":
    main(sys.argv)
