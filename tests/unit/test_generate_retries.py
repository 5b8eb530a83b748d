"""generate_chunk under throttling: retried in the chunk, never dropped, never charged twice."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.backends.bedrock import GeneratedImage
from imagebatch.backends.retry import BackoffPolicy
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.errors import ChunkUnfinished, ImageGenerationError
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkFile, ChunkTask, FailureClass, ImageJob
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
    summary = setup[1].get_batch(BATCH)
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
    assert ledger.get_batch(BATCH)["images_succeeded"] == 4

    # WHEN Step Functions retries the chunk and Bedrock has calmed down
    calm = FlakyBackend({})
    result = run(setup, calm, lambda: 600_000)

    # THEN only the two unfinished images are made; nothing is made or charged twice
    assert sorted(calm.calls) == ["i1-1", "i3-1"]
    assert (result.succeeded, result.skipped_already_done) == (2, 4)
    assert ledger.get_batch(BATCH)["images_succeeded"] == 6


def test_running_out_of_time_hands_images_back_instead_of_dropping_them(setup: Any) -> None:
    backend = FlakyBackend({})
    with pytest.raises(ChunkUnfinished) as caught:
        run(setup, backend, lambda: 500)  # less than the commit reserve
    assert set(caught.value.unfinished) == {f"i{k}-1" for k in range(6)}
    assert set(caught.value.unfinished.values()) == {FailureClass.TIMEOUT}
    assert backend.calls == []
