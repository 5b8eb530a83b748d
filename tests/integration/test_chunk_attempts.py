"""Attempts of one Bedrock chunk against each other and against finalize, and finalize runs
against each other (issue 18).

The stored PNG is the evidence: an attempt killed between its PNGs and its commit is
recorded from them by the chunk's next attempt, not bought again. Each attempt holds budget
under its own id, so a second attempt never writes off a first one's live hold. Once
finalize starts, a chunk's commit is refused (the fence) and its images go to its pending
file; of two finalize runs, the later one's reports stay.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.backends.bedrock import GeneratedImage
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkFile, ChunkResult, ChunkTask, ImageJob

MODEL = "stability.sd3-5-large-v1:0"
BATCH = "b-attempts"
PRICE = load_catalogue().get(MODEL).price_for(1024, 1024).micro_usd_per_image  # type: ignore[union-attr]
CAP = 10**9


def jobs(n: int) -> list[ImageJob]:
    return [
        ImageJob(
            image_id=f"i{k}-1",
            item_id=f"i{k}",
            index=1,
            line=k + 2,
            prompt=f"prompt {k}",
            width=1024,
            height=1024,
            seed=k + 1,
            model=MODEL,
        )
        for k in range(n)
    ]


class CountingBackend:
    """Bedrock as a counter of images bought; `before` runs ahead of the first call."""

    def __init__(self, before: Callable[[], None] | None = None) -> None:
        self.calls: list[str] = []
        self._before = before
        self._lock = threading.Lock()

    def generate(self, job: ImageJob) -> GeneratedImage:
        with self._lock:
            first, self._before = self._before, None
        if first is not None:
            first()
        with self._lock:
            self.calls.append(job.image_id)
        return GeneratedImage(png=b"\x89PNG fake", seed=job.seed)


class KilledBeforeCommit(Exception):
    """Lambda stopped the invocation at its timeout between the PNGs and the commit."""


class Killed:
    """The ledger as a killed attempt sees it: everything but the commit happens."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def commit_images(self, *args: Any, **kwargs: Any) -> int:
        raise KilledBeforeCommit


@pytest.fixture
def capped(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> tuple[BatchStore, Ledger, ChunkTask]:
    store = BatchStore(s3_client, s3_bucket)
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 6, "max_cost_micro_usd": CAP})
    ref = store.put_chunk(
        ChunkFile(
            batch_id=BATCH,
            chunk_id="00000",
            backend="bedrock",
            output_prefix="outputs/",
            images=jobs(6),
        )
    )
    store.put_chunk_index(BATCH, [ref])
    return store, ledger, ChunkTask(batch_id=BATCH, bucket=s3_bucket, chunk=ref)


def attempt(
    task: ChunkTask,
    store: BatchStore,
    ledger: Any,
    backend: CountingBackend,
    *,
    concurrency: int = 2,
    **kwargs: Any,
) -> ChunkResult:
    from imagebatch.pipeline.generate import generate_chunk

    return generate_chunk(
        task,
        store=store,
        ledger=ledger,
        backend=backend,
        catalogue=load_catalogue(),
        concurrency=concurrency,
        time_left_ms=lambda: 600_000,
        commit_reserve_ms=1_000,
        prices=load_aws_prices().region("us-east-1"),
        clock=LambdaClock(512),
        **kwargs,
    )


def retry_of(task: ChunkTask, n: int) -> ChunkTask:
    """The task as Step Functions hands it to the chunk's n-th retry ($$.State.RetryCount)."""
    return ChunkTask.model_validate(task.model_dump() | {"retry_count": n})


def test_the_next_attempt_records_what_a_killed_attempt_stored_instead_of_buying_it_again(
    capped: tuple[BatchStore, Ledger, ChunkTask],
) -> None:
    store, ledger, task = capped
    bedrock = CountingBackend()

    # GIVEN an attempt killed after storing its six PNGs, before its commit (no pending file)
    with pytest.raises(KilledBeforeCommit):
        attempt(task, store, Killed(ledger), bedrock)
    assert len(bedrock.calls) == 6

    # WHEN Step Functions retries the chunk (Sandbox.Timedout is retried)
    result = attempt(retry_of(task, 1), store, ledger, bedrock)

    # THEN the retry records the six from their PNGs: each image bought once, charged once,
    # and the killed attempt's hold settled by that commit (nothing written off)
    assert sorted(bedrock.calls) == sorted(f"i{k}-1" for k in range(6))
    assert result.failed == 0
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert (summary.images_succeeded, summary.images_failed) == (6, 0)
    assert summary.cost_micro_usd == 6 * PRICE
    assert summary.reserved_micro_usd == 0
    assert summary.unsettled_micro_usd == 0
    assert list(ledger.query_batch(BATCH, "RESERVATION#")) == []


def test_a_redriven_attempt_records_what_a_killed_attempt_stored_instead_of_buying_it_again(
    capped: tuple[BatchStore, Ledger, ChunkTask],
) -> None:
    store, ledger, task = capped
    bedrock = CountingBackend()

    # GIVEN an attempt killed after storing its six PNGs, before its commit (no pending file)
    with pytest.raises(KilledBeforeCommit):
        attempt(task, store, Killed(ledger), bedrock)
    assert len(bedrock.calls) == 6

    # WHEN a redriven execution runs the chunk again: its RetryCount starts at 0 again
    result = attempt(task, store, ledger, bedrock)

    # THEN the six are recorded from their PNGs, not bought again
    assert len(bedrock.calls) == 6
    assert result.failed == 0
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert (summary.images_succeeded, summary.images_failed) == (6, 0)
    assert summary.cost_micro_usd == 6 * PRICE
    assert summary.reserved_micro_usd == 0
    assert summary.unsettled_micro_usd == 0


def _s3_calls(s3_client: Any) -> Counter[str]:
    """The S3 operations the client sends from now on, by name."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    s3_client.meta.events.register("before-call.s3", count)
    return calls


def test_every_attempt_looks_for_stored_pngs_with_one_list_not_a_head_per_image(
    capped: tuple[BatchStore, Ledger, ChunkTask],
) -> None:
    store, ledger, task = capped
    calls = _s3_calls(store._s3)

    # WHEN a first attempt runs a chunk nothing stored yet
    attempt(task, store, ledger, CountingBackend())

    # THEN it looked for stored PNGs under the chunk's own keys with one ListObjectsV2 and
    # asked for no PNG's metadata
    assert calls["ListObjectsV2"] == 1
    assert calls["HeadObject"] == 0


def test_a_second_attempt_does_not_write_off_a_live_first_attempts_hold(
    capped: tuple[BatchStore, Ledger, ChunkTask],
) -> None:
    store, ledger, task = capped
    seen: dict[str, Any] = {}

    def second_attempt() -> None:
        # Step Functions gave up on the first invocation (Lambda.ClientExecutionTimeoutException)
        # and runs the chunk again while the first still runs
        seen["second"] = attempt(retry_of(task, 1), store, ledger, CountingBackend())
        seen["summary"] = ledger.get_batch(BATCH)

    # GIVEN a first attempt holding budget, and a second attempt of the chunk run while the
    # first is at its first Bedrock call (one call at a time: the first stores no PNG before it)
    first_bedrock = CountingBackend(before=second_attempt)
    try:
        first: ChunkResult | Exception = attempt(task, store, ledger, first_bedrock, concurrency=1)
    except Exception as exc:  # noqa: BLE001 (checked below, after what the second attempt did)
        first = exc

    # THEN the second held and settled its own hold: the first's live hold was not written
    # off as unsettled spend
    assert seen["second"].succeeded == 6
    assert seen["summary"].unsettled_micro_usd == 0
    assert seen["summary"].reserved_micro_usd > 0  # the first attempt's hold, still live

    # AND the first, finding its images recorded by the second, settled its own hold: what
    # it bought again is charged once, as rework, and no hold is left to write off
    assert isinstance(first, ChunkResult), first
    assert first.failed == 0
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert (summary.images_succeeded, summary.images_failed) == (6, 0)
    assert summary.cost_micro_usd == 6 * PRICE
    assert summary.rework_micro_usd == len(first_bedrock.calls) * PRICE
    assert summary.reserved_micro_usd == 0
    assert summary.unsettled_micro_usd == 0
    assert list(ledger.query_batch(BATCH, "RESERVATION#")) == []


@pytest.fixture
def uncapped(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> tuple[BatchStore, Ledger, ChunkTask]:
    store = BatchStore(s3_client, s3_bucket)
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 6})
    ref = store.put_chunk(
        ChunkFile(
            batch_id=BATCH,
            chunk_id="00000",
            backend="bedrock",
            output_prefix="outputs/",
            images=jobs(6),
        )
    )
    store.put_chunk_index(BATCH, [ref])
    return store, ledger, ChunkTask(batch_id=BATCH, bucket=s3_bucket, chunk=ref)


class Pause:
    """Where finalize waits for the late attempt: once it has looked for stored PNGs and
    written holds off (`scanned`), it has read which images are recorded; the first thing it
    does after that read (look for the chunk's pending file, or commit the images it found
    lost) waits until the late attempt has ended (`late_done`)."""

    def __init__(self, late_done: threading.Event) -> None:
        self.scanned = threading.Event()
        self._late_done = late_done
        self._lock = threading.Lock()
        self._done = False

    def here(self) -> None:
        with self._lock:
            if not self.scanned.is_set() or self._done:
                return
            self._done = True
        assert self._late_done.wait(60), "the late attempt never ended"


class FinalizeLedger:
    """Finalize's ledger: says when holds are written off, pauses before its next commit."""

    def __init__(self, ledger: Ledger, pause: Pause) -> None:
        self._ledger = ledger
        self._pause = pause

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def write_off_holds(self, batch_id: str) -> int:
        written_off = self._ledger.write_off_holds(batch_id)
        self._pause.scanned.set()
        return written_off

    def commit_images(self, *args: Any, **kwargs: Any) -> int:
        self._pause.here()
        return self._ledger.commit_images(*args, **kwargs)


class FinalizeStore:
    """Finalize's store: pauses before it reads a pending file (after the scan)."""

    def __init__(self, store: BatchStore, pause: Pause) -> None:
        self._store = store
        self._pause = pause

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_pending_commit(self, batch_id: str, chunk_id: str) -> bytes | None:
        self._pause.here()
        return self._store.get_pending_commit(batch_id, chunk_id)


def test_a_chunk_commit_racing_finalize_is_fenced_and_neither_lost_nor_charged_twice(
    uncapped: tuple[BatchStore, Ledger, ChunkTask],
) -> None:
    from imagebatch.pipeline.finalize import FinalizeEvent, finalize_batch

    store, ledger, task = uncapped
    late_done = threading.Event()
    pause = Pause(late_done)
    scanned = pause.scanned
    late: dict[str, Any] = {}
    buying = threading.Event()

    # GIVEN an attempt of the chunk still running (a ghost Step Functions gave up on), at its
    # first Bedrock call when finalize starts, whose calls return only once finalize has
    # looked for stored PNGs
    def wait_for_finalize() -> None:
        buying.set()
        assert scanned.wait(60), "finalize never got there"

    late_bedrock = CountingBackend(before=wait_for_finalize)

    def late_attempt() -> None:
        try:
            late["result"] = attempt(
                task,
                store,
                ledger,
                late_bedrock,
                concurrency=1,
            )
        except Exception as exc:  # noqa: BLE001 (what it raised is checked below)
            late["error"] = exc
        finally:
            late_done.set()

    runner = threading.Thread(target=late_attempt)
    runner.start()
    assert buying.wait(60), "the late attempt never started"

    # WHEN finalize runs meanwhile, and the attempt's commit comes between finalize's read of
    # what is recorded and its recording of the images it found lost
    try:
        report = finalize_batch(
            FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
            store=FinalizeStore(store, pause),  # type: ignore[arg-type]
            ledger=FinalizeLedger(ledger, pause),  # type: ignore[arg-type]
            prices=load_aws_prices().region("us-east-1"),
        )
    finally:
        scanned.set()
        runner.join(60)

    # THEN finalize is not broken by the late commit (refused: finalize had started) ...
    assert "result" not in late, "a commit after finalize started was not refused"
    assert report.images_total == 6
    summary = ledger.get_batch(BATCH)
    assert summary is not None and summary.status == report.status
    assert summary.images_succeeded + summary.images_failed == 6

    # ... and what the late attempt bought is charged once: as images or as rework
    assert len(late_bedrock.calls) == 6
    assert summary.cost_micro_usd + summary.rework_micro_usd == 6 * PRICE
    assert len(list(ledger.image_records(BATCH))) == 6


class PausedStore:
    """A finalize run's store whose first failed.jsonl write waits for `go`."""

    def __init__(self, store: BatchStore, at: threading.Event, go: threading.Event) -> None:
        self._store = store
        self._at = at
        self._go = go

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def put_jsonl_report(self, *args: Any, **kwargs: Any) -> str:
        if not self._at.is_set():
            self._at.set()
            assert self._go.wait(60), "the other finalize run never ended"
        return self._store.put_jsonl_report(*args, **kwargs)


def test_an_older_finalize_run_does_not_overwrite_the_settled_runs_reports(
    uncapped: tuple[BatchStore, Ledger, ChunkTask], dynamodb_client: Any
) -> None:
    import json

    from imagebatch.pipeline.finalize import BatchReport, FinalizeEvent, finalize_batch

    store, ledger, task = uncapped
    # GIVEN a chunk that failed for good, its six images never made
    dynamodb_client.put_item(
        TableName=ledger.table,
        Item={
            "pk": {"S": f"BATCH#{BATCH}"},
            "sk": {"S": f"CHUNK#{task.chunk.chunk_id}"},
            "status": {"S": "FAILED"},
            "chunk_key": {"S": task.chunk.key},
            "error": {"S": "States.Timeout"},
        },
    )
    event = FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused")
    prices = load_aws_prices().region("us-east-1")
    at, go = threading.Event(), threading.Event()
    older: dict[str, Any] = {}

    def older_run() -> None:
        # each run is charged its own Lambda time (10 GB: a few ms are a micro-dollar)
        older["report"] = finalize_batch(
            event,
            store=PausedStore(store, at, go),  # type: ignore[arg-type]
            ledger=ledger,
            prices=prices,
            clock=LambdaClock(10240),
        )

    # WHEN a finalize run is paused while writing its reports (Step Functions gave up on it,
    # Lambda.ClientExecutionTimeoutException) and the retry runs from start to end meanwhile
    runner = threading.Thread(target=older_run)
    runner.start()
    try:
        assert at.wait(60), "the first run never reached its reports"
        newer = finalize_batch(
            event, store=store, ledger=ledger, prices=prices, clock=LambdaClock(10240)
        )
    finally:
        go.set()
        runner.join(60)

    # THEN the reports in S3 are the run that settled the batch's, not the older run's
    summary = ledger.get_batch(BATCH)
    assert summary is not None and summary.report_key is not None
    stored = BatchReport.model_validate_json(store.open_object(summary.report_key).read())
    assert stored == newer
    assert stored.charged_micro_usd == summary.spent_micro_usd
    failed = store.open_object(f"reports/{BATCH}/failed.jsonl").read().decode().splitlines()
    assert sorted(json.loads(line)["image_id"] for line in failed) == [f"i{k}-1" for k in range(6)]


def test_a_stored_png_whose_seed_is_not_a_seed_is_no_evidence(
    capped: tuple[BatchStore, Ledger, ChunkTask],
) -> None:
    store, ledger, task = capped
    bedrock = CountingBackend()
    with pytest.raises(KilledBeforeCommit):
        attempt(task, store, Killed(ledger), bedrock)

    # GIVEN someone with write access to outputs/ rewrote one PNG's seed (a manifest author)
    key = f"outputs/{BATCH}/i0-1.png"
    meta = store._s3.head_object(Bucket=store.bucket, Key=key)["Metadata"]
    store._s3.copy_object(
        Bucket=store.bucket,
        Key=key,
        CopySource={"Bucket": store.bucket, "Key": key},
        Metadata=meta | {"seed": "9" * 47},
        MetadataDirective="REPLACE",
    )

    # WHEN the chunk is retried
    attempt(retry_of(task, 1), store, ledger, bedrock)

    # THEN that PNG is no evidence (a 47-digit seed fits no record): the image is made again,
    # the other five are recorded from their PNGs
    assert sorted(bedrock.calls).count("i0-1") == 2
    assert len(bedrock.calls) == 7
    summary = ledger.get_batch(BATCH)
    assert summary is not None and summary.images_succeeded == 6


def test_the_listing_of_a_chunks_keys_stops_at_its_last_key_or_its_page_cap(
    s3_client: Any, s3_bucket: str
) -> None:
    store = BatchStore(s3_client, s3_bucket)
    for k in (0, 1, 2, 3, 5, 6, 7, 8):
        s3_client.put_object(Bucket=s3_bucket, Key=f"outputs/b/a{k}.png", Body=b"png")
    first, last = "outputs/b/a2.png", "outputs/b/a7.png"

    # WHEN the range is listed two keys a page: it ends at its last key, a4 missing
    found, reached = store.list_keys_between(first, last, max_pages=5, page_size=2)
    assert (sorted(found), reached) == ([f"outputs/b/a{k}.png" for k in (2, 3, 5, 6, 7)], last)

    # WHEN the pages run out first: what lies past the key it reached is unknown
    found, reached = store.list_keys_between(first, last, max_pages=1, page_size=2)
    assert (sorted(found), reached) == (
        ["outputs/b/a2.png", "outputs/b/a3.png"],
        "outputs/b/a3.png",
    )
    assert store.meter.take().s3_put_requests == 4  # a LIST is priced as a PUT
