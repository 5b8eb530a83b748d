"""generate_chunk under throttling and faults of our own calls: retried in the chunk, never
dropped, never charged twice.

An image Bedrock made is an image charged, exactly once, even when the ledger commit or the
PNG upload fails; a failure's class names what actually failed; a transient failure reaches a
retry that records what the failed attempt already made instead of buying it again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from support.ledger_summary import as_item

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.backends.bedrock import GeneratedImage
from imagebatch.backends.retry import BackoffPolicy
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.errors import ChunkUnfinished, ImageGenerationError
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkFile, ChunkTask, FailureClass, ImageJob
from imagebatch.pipeline.finalize import FinalizeEvent, finalize_batch
from imagebatch.pipeline.generate import generate_chunk

MODEL = "stability.sd3-5-large-v1:0"
BATCH = "b-1"


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


class FlakyBackend:
    """Throttles the first `throttles[image_id]` calls for an image, refuses `refuse` ones."""

    def __init__(self, throttles: dict[str, int], refuse: frozenset[str] = frozenset()) -> None:
        self._left = dict(throttles)
        self._refuse = refuse
        self._lock = threading.Lock()
        self.calls: list[str] = []
        self.returned: list[str] = []

    def generate(self, job: ImageJob) -> GeneratedImage:
        with self._lock:
            self.calls.append(job.image_id)
            if self._left.get(job.image_id, 0) > 0:
                self._left[job.image_id] -= 1
                raise ImageGenerationError(
                    FailureClass.THROTTLED, "ThrottlingException", transient=True
                )
            if job.image_id in self._refuse:
                raise ImageGenerationError(
                    FailureClass.CONTENT_FILTERED, "Filter reason: prompt", transient=False
                )
            self.returned.append(job.image_id)
        return GeneratedImage(png=b"\x89PNG fake", seed=job.seed)


@pytest.fixture
def setup(
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
    return (
        store,
        ledger,
        ChunkTask(batch_id=BATCH, bucket=s3_bucket, chunk=ref, chunk_concurrency=3),
    )


def run(setup: tuple[BatchStore, Ledger, ChunkTask], backend: FlakyBackend, time_left: Any) -> Any:
    store, ledger, task = setup
    return generate_chunk(
        task,
        store=store,
        ledger=ledger,
        backend=backend,
        catalogue=load_catalogue(),
        concurrency=8,
        time_left_ms=time_left,
        commit_reserve_ms=1_000,
        retry_policy=BackoffPolicy(base_s=0.001, cap_s=0.004, max_attempts=6),
        prices=load_aws_prices().region("us-east-1"),
        clock=LambdaClock(512),
    )


def test_throttles_are_absorbed_inside_the_chunk(setup: Any) -> None:
    backend = FlakyBackend({"i0-1": 3, "i2-1": 5, "i4-1": 1}, refuse=frozenset({"i5-1"}))
    result = run(setup, backend, lambda: 600_000)
    assert (result.succeeded, result.failed) == (5, 1)
    assert sorted(backend.returned) == ["i0-1", "i1-1", "i2-1", "i3-1", "i4-1"]
    assert backend.calls.count("i5-1") == 1  # a refusal is not retried
    price = load_catalogue().get(MODEL).price_for(1024, 1024).micro_usd_per_image  # type: ignore[union-attr]
    assert result.cost_micro_usd == 5 * price
    summary = as_item(setup[1].get_batch(BATCH))
    assert summary["images_failed"] == 1 and summary["cost_micro_usd"] == 5 * price


def test_images_still_throttled_go_back_unfinished_and_the_retry_makes_only_them(
    setup: Any,
) -> None:
    # GIVEN two images Bedrock keeps throttling longer than the chunk's attempts last
    backend = FlakyBackend({"i1-1": 100, "i3-1": 100})

    # WHEN the chunk runs
    with pytest.raises(ChunkUnfinished) as caught:
        run(setup, backend, lambda: 600_000)

    # THEN they go back to Step Functions with their class; the rest is committed once
    assert caught.value.unfinished == {
        "i1-1": FailureClass.THROTTLED,
        "i3-1": FailureClass.THROTTLED,
    }
    assert '"i1-1": "throttled"' in str(caught.value)
    ledger = setup[1]
    assert as_item(ledger.get_batch(BATCH))["images_succeeded"] == 4

    # WHEN Step Functions retries the chunk and Bedrock has calmed down
    calm = FlakyBackend({})
    result = run(setup, calm, lambda: 600_000)

    # THEN only the two unfinished images are made; nothing is made or charged twice
    assert sorted(calm.calls) == ["i1-1", "i3-1"]
    assert (result.succeeded, result.skipped_already_done) == (2, 4)
    assert as_item(ledger.get_batch(BATCH))["images_succeeded"] == 6


def test_running_out_of_time_hands_images_back_instead_of_dropping_them(setup: Any) -> None:
    backend = FlakyBackend({})
    with pytest.raises(ChunkUnfinished) as caught:
        run(setup, backend, lambda: 500)  # less than the commit reserve
    assert set(caught.value.unfinished) == {f"i{k}-1" for k in range(6)}
    assert set(caught.value.unfinished.values()) == {FailureClass.TIMEOUT}
    assert backend.calls == []


# -- faults of our own calls -----------------------------------------------------------------

PRICE = load_catalogue().get(MODEL).price_for(1024, 1024).micro_usd_per_image  # type: ignore[union-attr]


def _conflict() -> ClientError:
    return ClientError(
        {
            "Error": {
                "Code": "TransactionCanceledException",
                "Message": "Transaction cancelled, please refer cancellation reasons for "
                "specific reasons [None, TransactionConflict]",
            },
            "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
        },
        "TransactWriteItems",
    )


COMMIT_EVENT = "before-parameter-build.dynamodb.TransactWriteItems"
COMMIT_FAULT = "fail-image-commits"


def fail_image_commits(client: Any, times: int) -> Callable[[], int]:
    """The next `times` commits that record images fail as a DynamoDB transaction conflict;
    returns a counter of the failures injected."""
    failed = [0]

    def before_build(params: dict[str, Any], **_: Any) -> None:
        items = params.get("TransactItems", [])
        records_images = any(
            "Put" in item and item["Put"]["Item"]["sk"]["S"].startswith("IMAGE#") for item in items
        )
        if records_images and failed[0] < times:
            failed[0] += 1
            raise _conflict()

    client.meta.events.register(COMMIT_EVENT, before_build, unique_id=COMMIT_FAULT)
    return lambda: failed[0]


def fail_png_uploads(client: Any, image_ids: set[str]) -> None:
    def before_build(params: dict[str, Any], **_: Any) -> None:
        key = str(params.get("Key", ""))
        if any(key.endswith(f"/{image_id}.png") for image_id in image_ids):
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "We encountered an internal error"}},
                "PutObject",
            )

    client.meta.events.register("before-parameter-build.s3.PutObject", before_build)


def test_one_transaction_conflict_on_the_commit_is_retried_and_nothing_is_bought_twice(
    setup: tuple[BatchStore, Ledger, ChunkTask], dynamodb_client: Any
) -> None:
    # GIVEN the ledger's first image commit fails with a transaction conflict
    injected = fail_image_commits(dynamodb_client, times=1)
    backend = FlakyBackend({})

    # WHEN the chunk runs
    result = run(setup, backend, lambda: 600_000)

    # THEN the commit is retried: every image made is charged once, each bought once
    assert injected() == 1
    assert (result.succeeded, result.failed) == (6, 0)
    assert sorted(backend.calls) == sorted(f"i{k}-1" for k in range(6))
    summary = as_item(setup[1].get_batch(BATCH))
    assert summary is not None
    assert (summary["images_succeeded"], summary["cost_micro_usd"]) == (6, 6 * PRICE)


def test_a_ledger_that_stays_unavailable_hands_the_made_images_to_the_retry(
    setup: tuple[BatchStore, Ledger, ChunkTask], dynamodb_client: Any
) -> None:
    # GIVEN the ledger refuses every image commit of this attempt
    fail_image_commits(dynamodb_client, times=1_000)
    bought = FlakyBackend({})

    # WHEN the chunk runs
    with pytest.raises(ChunkUnfinished) as caught:
        run(setup, bought, lambda: 600_000)

    # THEN it goes back to Step Functions, naming a storage failure, not a model error
    assert set(caught.value.unfinished.values()) == {FailureClass.STORAGE_ERROR}
    assert len(bought.returned) == 6

    # WHEN the ledger recovers and Step Functions retries the chunk
    dynamodb_client.meta.events.unregister(COMMIT_EVENT, unique_id=COMMIT_FAULT)
    retry = FlakyBackend({})
    result = run(setup, retry, lambda: 600_000)

    # THEN the retry records what the first attempt made, without buying it again
    assert retry.calls == []
    assert result.skipped_already_done + result.succeeded == 6
    summary = as_item(setup[1].get_batch(BATCH))
    assert summary is not None
    assert (summary["images_succeeded"], summary["cost_micro_usd"]) == (6, 6 * PRICE)


def test_finalize_records_what_an_attempt_made_when_every_retry_failed(
    setup: tuple[BatchStore, Ledger, ChunkTask], dynamodb_client: Any
) -> None:
    store, ledger, task = setup
    # GIVEN an attempt that made its images but could not commit them, and no retry left
    fail_image_commits(dynamodb_client, times=1_000)
    with pytest.raises(ChunkUnfinished) as caught:
        run(setup, FlakyBackend({}), lambda: 600_000)
    dynamodb_client.meta.events.unregister(COMMIT_EVENT, unique_id=COMMIT_FAULT)
    store.put_chunk_index(BATCH, [task.chunk])
    # the marker the state machine's RecordChunkFailure writes when the retries ran out
    dynamodb_client.put_item(
        TableName=ledger.table,
        Item={
            "pk": {"S": f"BATCH#{BATCH}"},
            "sk": {"S": f"CHUNK#{task.chunk.chunk_id}"},
            "status": {"S": "FAILED"},
            "chunk_key": {"S": task.chunk.key},
            "error": {"S": "ChunkUnfinished"},
            "cause": {"S": json.dumps({"errorMessage": str(caught.value)})},
        },
    )

    # WHEN finalize runs
    report = finalize_batch(
        FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
        store=store,
        ledger=ledger,
        prices=load_aws_prices().region("us-east-1"),
    )

    # THEN the made images are recorded and charged, not lost as failures
    assert (report.images_succeeded, report.images_failed) == (6, 0)
    assert report.cost_micro_usd == 6 * PRICE


def test_a_png_upload_that_fails_is_a_storage_error_and_the_image_is_still_charged(
    setup: tuple[BatchStore, Ledger, ChunkTask], s3_client: Any
) -> None:
    # GIVEN S3 refuses the PNG of one image
    fail_png_uploads(s3_client, {"i2-1"})

    # WHEN the chunk runs
    result = run(setup, FlakyBackend({}), lambda: 600_000)

    # THEN that image is failed as a storage error, and charged: Bedrock made it
    assert (result.succeeded, result.failed) == (5, 1)
    records = {r["image_id"]: r for r in setup[1].image_records(BATCH)}
    assert records["i2-1"]["failure_class"] == FailureClass.STORAGE_ERROR
    assert "InternalError" in records["i2-1"]["failure_reason"]
    assert records["i2-1"]["cost_micro_usd"] == PRICE
    summary = as_item(setup[1].get_batch(BATCH))
    assert summary is not None and summary["cost_micro_usd"] == 6 * PRICE


class _KilledBeforeCommit(Exception):
    """Lambda stopped the invocation at its timeout between the PNGs and the commit."""


def test_images_an_attempt_stored_but_never_recorded_are_recorded_from_their_pngs(
    setup: tuple[BatchStore, Ledger, ChunkTask], dynamodb_client: Any
) -> None:
    store, ledger, task = setup

    # GIVEN an attempt killed after storing its PNGs, before its commit (no pending file)
    class _Killed:
        def __getattr__(self, name: str) -> Any:
            return getattr(ledger, name)

        def commit_images(self, *args: Any, **kwargs: Any) -> int:
            raise _KilledBeforeCommit

    with pytest.raises(_KilledBeforeCommit):
        generate_chunk(
            task,
            store=store,
            ledger=_Killed(),
            backend=FlakyBackend({}),
            catalogue=load_catalogue(),
            concurrency=8,
            time_left_ms=lambda: 600_000,
            commit_reserve_ms=1_000,
            prices=load_aws_prices().region("us-east-1"),
            clock=LambdaClock(512),
        )
    store.put_chunk_index(BATCH, [task.chunk])
    dynamodb_client.put_item(
        TableName=ledger.table,
        Item={
            "pk": {"S": f"BATCH#{BATCH}"},
            "sk": {"S": f"CHUNK#{task.chunk.chunk_id}"},
            "status": {"S": "FAILED"},
            "chunk_key": {"S": task.chunk.key},
            "error": {"S": "Sandbox.Timedout"},
        },
    )

    # WHEN finalize runs
    report = finalize_batch(
        FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
        store=store,
        ledger=ledger,
        prices=load_aws_prices().region("us-east-1"),
    )

    # THEN the stored images are recorded and charged from their PNGs' metadata, not failed
    # (a redrive would buy them again)
    assert (report.images_succeeded, report.images_failed) == (6, 0)
    assert report.cost_micro_usd == 6 * PRICE
    assert report.redrive_key is None


def test_a_stored_png_claiming_a_negative_cost_is_not_evidence(
    setup: tuple[BatchStore, Ledger, ChunkTask], dynamodb_client: Any
) -> None:
    store, ledger, task = setup

    # GIVEN an attempt killed after storing its PNGs, before its commit (no pending file)
    class _Killed:
        def __getattr__(self, name: str) -> Any:
            return getattr(ledger, name)

        def commit_images(self, *args: Any, **kwargs: Any) -> int:
            raise _KilledBeforeCommit

    with pytest.raises(_KilledBeforeCommit):
        generate_chunk(
            task,
            store=store,
            ledger=_Killed(),
            backend=FlakyBackend({}),
            catalogue=load_catalogue(),
            concurrency=8,
            time_left_ms=lambda: 600_000,
            commit_reserve_ms=1_000,
            prices=load_aws_prices().region("us-east-1"),
            clock=LambdaClock(512),
        )
    store.put_chunk_index(BATCH, [task.chunk])
    dynamodb_client.put_item(
        TableName=ledger.table,
        Item={
            "pk": {"S": f"BATCH#{BATCH}"},
            "sk": {"S": f"CHUNK#{task.chunk.chunk_id}"},
            "status": {"S": "FAILED"},
            "chunk_key": {"S": task.chunk.key},
            "error": {"S": "Sandbox.Timedout"},
        },
    )

    # AND someone with write access to outputs/ rewrote one PNG's metadata to a negative cost
    key = next(
        o["Key"]
        for o in store._s3.list_objects_v2(Bucket=store.bucket, Prefix="outputs/")["Contents"]
    )
    meta = store._s3.head_object(Bucket=store.bucket, Key=key)["Metadata"]
    store._s3.copy_object(
        Bucket=store.bucket,
        Key=key,
        CopySource={"Bucket": store.bucket, "Key": key},
        Metadata=meta | {"cost-micro-usd": "-1000000"},
        MetadataDirective="REPLACE",
    )

    # WHEN finalize runs
    report = finalize_batch(
        FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
        store=store,
        ledger=ledger,
        prices=load_aws_prices().region("us-east-1"),
    )

    # THEN that PNG is no evidence (a forged credit must not raise the budget left): recorded
    # as lost, the other five from their PNGs, and nothing is credited
    assert (report.images_succeeded, report.images_failed) == (5, 1)
    assert report.cost_micro_usd == 5 * PRICE
