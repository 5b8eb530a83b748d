"""max_cost_usd is a hard cap: per-chunk holds before spending, settlement after, refusals.

Runs the real generate_chunk and finalize_batch against moto S3 and a ledger table built
from template.yaml; only the image backend is a stand-in (it returns PNG-sized bytes or the
errors the Bedrock adapter raises). The driver plays the state machine: retries a chunk on
ChunkUnfinished or a crash, writes the CHUNK# marker when the retries run out.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagebatch_serving.engine import CallFailedError, CallShape, S3Sink, ServingEngine
from PIL import Image
from support.ledger_summary import as_item

from imagebatch.aws.dynamo_items import batch_pk, to_item
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.aws.stepfunctions import TaskTokens
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.backends.bedrock import GeneratedImage
from imagebatch.costs.estimate import Shape, estimate_batch
from imagebatch.costs.prices import InstancePrice, RegionPrices, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath, estimate_sagemaker_batch
from imagebatch.costs.usage import LambdaClock
from imagebatch.errors import ChunkUnfinished, EndpointResultsPending, ImageGenerationError
from imagebatch.models.bedrock_models import ModelCatalogue, Price, load_catalogue
from imagebatch.models.money import round_micro
from imagebatch.models.records import ChunkFile, ChunkTask, FailureClass, ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    ShapeBucket,
    SubmittedRequest,
)
from imagebatch.pipeline.finalize import FinalizeEvent, finalize_batch
from imagebatch.pipeline.generate import generate_chunk
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.pipeline.sagemaker_requests import HEARTBEAT as SUBMIT_HEARTBEAT
from imagebatch.pipeline.sagemaker_result import record_result
from imagebatch.pipeline.sagemaker_submit import SubmitTask, submit_chunk

MODEL = "stability.sd3-5-large-v1:0"
MAX_ATTEMPTS = 3
_examples = itertools.count()


class CrashError(RuntimeError):
    """The invocation dies before committing (out of memory, a bug): Lambda.Unknown."""


class ScriptedBackend:
    """Each image does what the drawn pattern says on each attempt; counts what it bills."""

    def __init__(self, pattern: dict[str, str], price: int, png_bytes: int) -> None:
        self.pattern = pattern
        self.price = price
        self.png = b"\x89PNG" + b"\x00" * png_bytes
        self.billed_micro_usd = 0
        self.attempt = 0
        self._lock = threading.Lock()

    def generate(self, job: ImageJob) -> GeneratedImage:
        kind = self.pattern[job.image_id]
        if kind == "crash" and self.attempt == 1:
            raise CrashError("invocation died")
        if kind == "throttled" and self.attempt == 1:
            raise ImageGenerationError(
                FailureClass.THROTTLED, "ThrottlingException", transient=True
            )
        if kind == "filtered":
            raise ImageGenerationError(
                FailureClass.CONTENT_FILTERED, "Filter reason: prompt", transient=False
            )
        with self._lock:
            self.billed_micro_usd += self.price
        return GeneratedImage(png=self.png, seed=job.seed)


def _catalogue(price_micro: int) -> ModelCatalogue:
    base = load_catalogue()
    spec = base.get(MODEL)
    assert spec is not None
    price = spec.price()
    priced = spec.model_copy(
        update={
            "prices": (
                Price(
                    tier=price.tier,
                    usd_per_image=Decimal(price_micro) / 1_000_000,
                    source="test",
                    retrieved=price.retrieved,
                ),
            )
        }
    )
    return base.model_copy(update={"models": (priced,)})


def _prices(factor: int) -> RegionPrices:
    region = load_aws_prices().region("us-east-1")
    return region.model_copy(
        update={
            "services": tuple(p.model_copy(update={"usd": p.usd * factor}) for p in region.services)
        }
    )


def _job(image_id: str, width: int) -> ImageJob:
    return ImageJob(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        index=1,
        line=2,
        prompt="a mug",
        width=width,
        height=width,
        seed=7,
        model=MODEL,
    )


def _check_invariant(ledger: Ledger, batch_id: str, cap: int) -> dict[str, Any]:
    summary = as_item(ledger.get_batch(batch_id))
    assert summary is not None
    held = (
        summary["spent_micro_usd"]
        + summary["reserved_micro_usd"]
        + summary["budget_left_micro_usd"]
        + summary["overhead_reserve_micro_usd"]
    )
    assert held == cap
    assert summary["spent_micro_usd"] <= cap
    assert summary["budget_left_micro_usd"] >= 0
    assert summary["overhead_reserve_micro_usd"] >= 0
    return summary


def _run_chunk(
    task: ChunkTask,
    *,
    store: BatchStore,
    ledger: Ledger,
    backend: ScriptedBackend,
    catalogue: ModelCatalogue,
    prices: RegionPrices,
    dynamodb_client: Any,
    cap: int,
) -> None:
    """One Map iteration: the task with its Retry, then the Catch path's ledger marker."""
    error: Exception | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        backend.attempt = attempt
        try:
            generate_chunk(
                task,
                store=BatchStore(store._s3, store.bucket),
                ledger=Ledger(dynamodb_client, ledger.table),
                backend=backend,
                catalogue=catalogue,
                concurrency=2,
                time_left_ms=lambda: 600_000,
                commit_reserve_ms=1_000,
                prices=prices,
                clock=LambdaClock(512),
            )
        except (ChunkUnfinished, CrashError) as exc:
            error = exc
            _check_invariant(ledger, task.batch_id, cap)
            continue
        _check_invariant(ledger, task.batch_id, cap)
        return
    assert error is not None
    dynamodb_client.put_item(
        TableName=ledger.table,
        Item=to_item(
            {
                "pk": batch_pk(task.batch_id),
                "sk": f"CHUNK#{task.chunk.chunk_id}",
                "status": "FAILED",
                "error": type(error).__name__,
                # As RecordChunkFailure writes it: the whole error output as JSON.
                "error_detail": json.dumps(
                    {
                        "Error": type(error).__name__,
                        "Cause": json.dumps({"errorMessage": str(error)}),
                    }
                ),
            }
        ),
    )


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    chunk_sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=6))
    kinds = st.sampled_from(["ok", "ok", "ok", "filtered", "throttled", "crash"])
    patterns = [draw(st.lists(kinds, min_size=n, max_size=n)) for n in chunk_sizes]
    return {
        "chunk_sizes": chunk_sizes,
        "patterns": patterns,
        "price": draw(st.integers(1, 200_000)),
        "price_factor": draw(st.sampled_from([1, 10, 1000])),
        "width": draw(st.sampled_from([64, 512, 1024])),
        "cap_share": draw(st.floats(0.05, 1.5)),
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=batches())
def test_spend_never_exceeds_the_cap_and_holds_return_to_zero(
    dynamodb_client: Any,
    s3_client: Any,
    s3_bucket: str,
    new_ledger_table: Callable[[str], str],
    drawn: dict[str, Any],
) -> None:
    # GIVEN a batch with random chunks, prices, failure patterns and a cap somewhere between
    # far too small and comfortable
    example = next(_examples)
    batch_id = f"budget-{example:06d}"
    ledger = Ledger(dynamodb_client, new_ledger_table(f"ledger-budget-{example}"))
    store = BatchStore(s3_client, s3_bucket)
    catalogue, prices = _catalogue(drawn["price"]), _prices(drawn["price_factor"])
    pattern: dict[str, str] = {}
    tasks = []
    refs = []
    for c, (size, kinds) in enumerate(zip(drawn["chunk_sizes"], drawn["patterns"], strict=True)):
        jobs = [_job(f"c{c}i{i}-1", drawn["width"]) for i in range(size)]
        pattern.update({job.image_id: kind for job, kind in zip(jobs, kinds, strict=True)})
        ref = store.put_chunk(
            ChunkFile(
                batch_id=batch_id,
                chunk_id=f"{c:05d}",
                backend="bedrock",
                output_prefix="outputs/",
                images=jobs,
            )
        )
        refs.append(ref)
        tasks.append(ChunkTask(batch_id=batch_id, bucket=s3_bucket, chunk=ref))
    store.put_chunk_index(batch_id, refs)
    images = sum(drawn["chunk_sizes"])
    estimate = estimate_batch(drawn["price"] * images, drawn["chunk_sizes"], prices, Shape())
    cap = int((estimate.total_micro_usd + estimate.overhead_reserve_micro_usd) * drawn["cap_share"])
    cap = max(cap, estimate.overhead_reserve_micro_usd + 1)
    assert ledger.create_batch(
        batch_id,
        {
            "status": "RUNNING",
            "images_total": images,
            "max_cost_micro_usd": cap,
            "overhead_reserve_micro_usd": estimate.overhead_reserve_micro_usd,
            "settings": json.dumps({"model": MODEL}),
        },
    )
    backend = ScriptedBackend(pattern, drawn["price"], png_bytes=drawn["width"])

    # WHEN every chunk runs (with retries) and the batch is finalized
    for task in tasks:
        _run_chunk(
            task,
            store=store,
            ledger=ledger,
            backend=backend,
            catalogue=catalogue,
            prices=prices,
            dynamodb_client=dynamodb_client,
            cap=cap,
        )
    report = finalize_batch(
        FinalizeEvent(batch_id=batch_id, bucket=s3_bucket, chunk_index_key=""),
        store=store,
        ledger=ledger,
        prices=prices,
    )

    # THEN spend never exceeded the cap, every hold was settled or released, and every image
    # is accounted for exactly once
    summary = _check_invariant(ledger, batch_id, cap)
    assert summary["reserved_micro_usd"] == 0
    assert list(ledger.query_batch(batch_id, "RESERVATION#")) == []
    # an attempt that died after making images spent outside the ledger's image records;
    # its written-off hold is the upper bound the ledger charges for it
    assert summary["cost_micro_usd"] <= backend.billed_micro_usd
    assert backend.billed_micro_usd <= summary["cost_micro_usd"] + summary.get(
        "unsettled_micro_usd", 0
    )
    records = list(ledger.image_records(batch_id))
    assert sorted(r["image_id"] for r in records) == sorted(pattern)
    exhausted = {r["image_id"] for r in records if r.get("failure_class") == "budget_exhausted"}
    if exhausted:
        assert report.status.value in {"PARTIAL", "FAILED"}
        redrive = store._s3.get_object(Bucket=s3_bucket, Key=f"reports/{batch_id}/redrive.jsonl")
        lines = [json.loads(line) for line in redrive["Body"].read().splitlines()]
        assert exhausted <= {line["id"] for line in lines[1:]}


def test_a_cap_below_the_estimate_refuses_the_chunk_and_records_budget_exhausted(
    dynamodb_client: Any, s3_client: Any, s3_bucket: str, ledger_table: str
) -> None:
    # GIVEN a batch whose cap covers the bookkeeping reserve but not one image
    ledger = Ledger(dynamodb_client, ledger_table)
    store = BatchStore(s3_client, s3_bucket)
    prices = load_aws_prices().region("us-east-1")
    jobs = [_job(f"mug-{i}", 1024) for i in range(1, 4)]
    ref = store.put_chunk(
        ChunkFile(
            batch_id="tight", chunk_id="00000", backend="bedrock", output_prefix="o/", images=jobs
        )
    )
    store.put_chunk_index("tight", [ref])
    estimate = estimate_batch(3 * 80_000, [3], prices, Shape())
    cap = estimate.overhead_reserve_micro_usd + 50_000
    ledger.create_batch(
        "tight",
        {
            "status": "RUNNING",
            "images_total": 3,
            "max_cost_micro_usd": cap,
            "overhead_reserve_micro_usd": estimate.overhead_reserve_micro_usd,
        },
    )
    backend = ScriptedBackend(dict.fromkeys((j.image_id for j in jobs), "ok"), 80_000, 10)

    # WHEN the chunk runs
    result = generate_chunk(
        ChunkTask(batch_id="tight", bucket=s3_bucket, chunk=ref),
        store=store,
        ledger=ledger,
        backend=backend,
        catalogue=_catalogue(80_000),
        concurrency=1,
        time_left_ms=lambda: 600_000,
        commit_reserve_ms=1_000,
        prices=prices,
        clock=LambdaClock(512),
    )

    # THEN nothing was generated, the images are budget_exhausted and the cap holds
    assert backend.billed_micro_usd == 0
    assert result.failed == 3
    records = list(ledger.image_records("tight"))
    assert {r["failure_class"] for r in records} == {"budget_exhausted"}
    summary = _check_invariant(ledger, "tight", cap)
    assert summary["cost_micro_usd"] == 0
    assert 0 < summary["spent_micro_usd"] <= estimate.overhead_reserve_micro_usd


@pytest.mark.parametrize("chunks", [1, 7])
def test_holdback_covers_refusals(chunks: int) -> None:
    # A refused chunk's bookkeeping is paid from the reserve ingest holds back for it.
    prices = load_aws_prices().region("us-east-1")
    estimate = estimate_batch(0, [50] * chunks, prices, Shape())
    assert estimate.overhead_reserve_micro_usd > 0
    assert estimate.orchestration_micro_usd > 0


# --- the SageMaker path ----------------------------------------------------------------------
#
# The driver plays the state machine (one task token per attempt, Retry on the SageMaker
# errors, Catch after the last attempt), the endpoint (the real serving engine over a
# pipeline whose calls take scripted seconds on a fake clock, with the hold's seconds
# enforced) and SNS/SQS (notifications delivered once, twice, late, or never).

SM_PRICE = InstancePrice(
    instance_type="ml.inf2.xlarge",
    accelerator="test",
    usd_per_hour=Decimal("3.6"),  # 1,000 micro-dollars per second
    source="test",
    retrieved=date(2026, 12, 1),
)
SM_SHAPE = "64x64/4/nocfg"
SM_ATTEMPTS = 3


class _ScriptedPipeline:
    """Each step takes `step_seconds` per image; a call may raise (the device failed)."""

    accelerator, max_batch = "test", 2
    buckets = (ShapeBucket(width=64, height=64),)

    def __init__(self, step_seconds: float) -> None:
        self.now = 0.0
        self.step_seconds = step_seconds
        self.fail_next = False
        self.billed_micro_usd = 0

    def clock(self) -> float:
        return self.now

    def generate(
        self,
        shape: CallShape,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | None,
        seeds: Sequence[int],
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Image.Image]:
        started = self.now
        try:
            for step in range(shape.steps):
                self.now += self.step_seconds * len(prompts)
                if self.fail_next and step == 1:
                    self.fail_next = False
                    raise RuntimeError("device lost")
                if should_stop is not None and should_stop():
                    break
        finally:
            # what AWS bills for the call: its seconds, rounded as the ledger rounds a call
            self.billed_micro_usd += round_micro(
                Decimal(str(self.now - started)) * SM_PRICE.micro_usd_per_second
            )
        return [Image.new("RGB", (shape.width, shape.height)) for _ in prompts]


class _SmTokens(TaskTokens):
    def __init__(self) -> None:
        self.answers: dict[str, tuple[str, str]] = {}

    def succeed(self, token: str, output: str) -> bool:
        self.answers.setdefault(token, ("success", output))
        return True

    def fail(self, token: str, error: str, cause: str) -> bool:
        self.answers.setdefault(token, ("failure", error))
        return True


class _SmEndpoint(AsyncEndpoint):
    def __init__(self) -> None:
        self.requests: list[str] = []

    def submit(
        self, input_location: str, inference_id: str, timeout_s: int | None = None
    ) -> SubmittedRequest:
        self.requests.append(input_location)
        return SubmittedRequest(inference_id=inference_id)


class _SmWorld:
    """The adapters a fresh invocation gets, and the endpoint that answers requests."""

    def __init__(self, s3: Any, bucket: str, ddb: Any, table: str, step_seconds: float) -> None:
        self.s3, self.bucket, self.ddb, self.table = s3, bucket, ddb, table
        self.pipeline = _ScriptedPipeline(step_seconds)
        self.engine = ServingEngine(
            self.pipeline, S3Sink(s3), clock=self.pipeline.clock, max_batch=2
        )
        self.tokens = _SmTokens()
        self.endpoint = _SmEndpoint()
        # the wall clock SubmitChunk and finalize see: the state machine's waits (a
        # heartbeat timeout, finalize's retries) move it on
        self.clock = datetime.now(UTC)

    def now(self) -> datetime:
        return self.clock

    def wait(self, seconds: float) -> None:
        self.clock += timedelta(seconds=seconds)

    def adapters(self) -> dict[str, Any]:
        ledger = Ledger(self.ddb, self.table)
        return {
            "store": BatchStore(self.s3, self.bucket),
            "ledger": ledger,
            "costing": EndpointCosting(
                endpoint_name="ep",
                price=SM_PRICE,
                prices=load_aws_prices().region("us-east-1"),
                path=SageMakerPath(max_batch=2),
                throughput=EndpointThroughput(self.ddb, self.table, ledger.meter),
            ),
            "clock": LambdaClock(512),
        }

    def run_request(self, input_location: str, kind: str) -> AsyncNotification:
        """The endpoint works on one request; returns the notification SageMaker sends."""
        store = BatchStore(self.s3, self.bucket)
        invocation = ChunkInvocation.model_validate_json(store.read_uri(input_location))
        # SageMaker names the output (or failure) object after the inference id
        n = input_location.rsplit("/", 1)[-1].removesuffix(".json")
        params: dict[str, Any] = {"endpointName": "ep", "inputLocation": input_location}
        if kind == "dies":  # the instance died: SageMaker's own error, no seconds on record
            key = f"async-failures/{n}-error.out"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"instance failed")
            response = {"failureLocation": f"s3://{self.bucket}/{key}"}
            status = "Failed"
        else:
            self.pipeline.fail_next = kind == "fails"
            try:
                result = self.engine.run(invocation)
                key, status = f"async-outputs/{n}.out", "Completed"
                body = result.model_dump_json()
                response = {"outputLocation": f"s3://{self.bucket}/{key}"}
            except CallFailedError as exc:
                key, status = f"async-failures/{n}-error.out", "Failed"
                body = json.dumps({"error": "RuntimeError", "partial": exc.partial.model_dump()})
                response = {"failureLocation": f"s3://{self.bucket}/{key}"}
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode())
        return AsyncNotification.model_validate(
            {
                "invocationStatus": status,
                # SubmitChunk keys the request by its inference id (RecordResult checks it)
                "inferenceId": input_location.rsplit("/", 1)[-1].removesuffix(".json"),
                "requestParameters": params,
                "responseParameters": response,
            }
        )

    def deliver(self, notification: AsyncNotification) -> None:
        record_result(notification, tokens=self.tokens, **self.adapters())


def _run_sagemaker_chunk(
    world: _SmWorld, task: ChunkTask, kinds: list[str], cap: int, late: list[AsyncNotification]
) -> None:
    """One Map iteration on the SageMaker branch: attempts until a token succeeds."""
    error = "States.Timeout"
    for attempt in range(SM_ATTEMPTS):
        token = f"{task.chunk.chunk_id}-token-{attempt}-{task.batch_id}"
        submit = SubmitTask(**(task.model_dump() | {"task_token": token, "retry_count": attempt}))
        before = len(world.endpoint.requests)
        submit_chunk(
            submit, endpoint=world.endpoint, tokens=world.tokens, now=world.now, **world.adapters()
        )
        _check_invariant(Ledger(world.ddb, world.table), task.batch_id, cap)
        if len(world.endpoint.requests) > before:
            kind = kinds[attempt]
            location = world.endpoint.requests[-1]
            if kind == "lost":  # the request never comes back (its TTL ran out)
                pass
            elif kind == "timeout":  # the state machine moves on; the result comes late
                late.append(world.run_request(location, "ok"))
            else:
                notification = world.run_request(location, kind)
                world.deliver(notification)
                if kind == "duplicate":
                    world.deliver(notification)
            _check_invariant(Ledger(world.ddb, world.table), task.batch_id, cap)
        answer = world.tokens.answers.get(token)
        if answer is not None and answer[0] == "success":
            return
        error = answer[1] if answer else "States.HeartbeatTimeout"
        if answer is None:  # the state machine retries once the heartbeat timed out
            world.wait(SUBMIT_HEARTBEAT.total_seconds())
        if late and attempt % 2 == 1:  # an earlier attempt's result lands mid-retries
            world.deliver(late.pop(0))
            _check_invariant(Ledger(world.ddb, world.table), task.batch_id, cap)
    world.ddb.put_item(
        TableName=world.table,
        Item=to_item(
            {
                "pk": batch_pk(task.batch_id),
                "sk": f"CHUNK#{task.chunk.chunk_id}",
                "status": "FAILED",
                "error": error,
                "cause": "{}",
            }
        ),
    )


@st.composite
def sagemaker_batches(draw: st.DrawFn) -> dict[str, Any]:
    chunk_sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    kinds = st.sampled_from(["ok", "ok", "ok", "duplicate", "fails", "dies", "timeout", "lost"])
    return {
        "chunk_sizes": chunk_sizes,
        "attempts": [draw(st.lists(kinds, min_size=3, max_size=3)) for _ in chunk_sizes],
        # real seconds per image-step, and what the endpoint's records believe (stale)
        "step_seconds": draw(st.sampled_from([0.01, 0.05, 0.2])),
        "believed": draw(st.sampled_from([0.25, 1.0, 3.0])),
        "invalid": draw(st.booleans()),
        "cap_share": draw(st.sampled_from([0.1, 0.5, 1.0, 2.0, 4.0])),
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=sagemaker_batches())
def test_sagemaker_spend_never_exceeds_the_cap_and_every_second_is_charged(
    dynamodb_client: Any,
    s3_client: Any,
    s3_bucket: str,
    new_ledger_table: Callable[[str], str],
    drawn: dict[str, Any],
) -> None:
    # GIVEN a sagemaker batch with random chunks, speeds, stale measurements, endpoint
    # behaviour per attempt (failed calls, dead instances, timeouts with late results,
    # duplicate and lost notifications) and a cap from far too small to comfortable
    example = next(_examples)
    batch_id = f"sm-budget-{example:06d}"
    table = new_ledger_table(f"ledger-sm-{example}")
    world = _SmWorld(s3_client, s3_bucket, dynamodb_client, table, drawn["step_seconds"])
    believed_us = round(drawn["step_seconds"] * 4 * drawn["believed"] * 1_000_000)
    EndpointThroughput(dynamodb_client, table).add("ep", "tiny-sd", {SM_SHAPE: (believed_us, 1)})
    store = BatchStore(s3_client, s3_bucket)
    tasks, refs, images = [], [], []
    for c, size in enumerate(drawn["chunk_sizes"]):
        jobs = [_sm_job(f"c{c}i{i}-1") for i in range(size)]
        if drawn["invalid"] and c == 0:
            jobs[0] = jobs[0].model_copy(update={"width": 128})  # not a compiled bucket
        images += [j.image_id for j in jobs]
        ref = store.put_chunk(
            ChunkFile(
                batch_id=batch_id,
                chunk_id=f"{c:05d}",
                backend="sagemaker",
                output_prefix="outputs/",
                images=jobs,
            )
        )
        refs.append(ref)
        tasks.append(ChunkTask(batch_id=batch_id, bucket=s3_bucket, chunk=ref))
    store.put_chunk_index(batch_id, refs)
    prices = load_aws_prices().region("us-east-1")
    estimate = estimate_sagemaker_batch(
        Decimal(believed_us) / 1000 * len(images),
        drawn["chunk_sizes"],
        [1] * len(refs),
        prices,
        Shape(),
        path=SageMakerPath(max_batch=2),
        capped=True,
        pixels=64 * 64,
    )
    cap = int((estimate.total_micro_usd + estimate.overhead_reserve_micro_usd) * drawn["cap_share"])
    cap = max(cap, estimate.overhead_reserve_micro_usd + 1)
    ledger = Ledger(dynamodb_client, table)
    assert ledger.create_batch(
        batch_id,
        {
            "status": "RUNNING",
            "images_total": len(images),
            "max_cost_micro_usd": cap,
            "overhead_reserve_micro_usd": estimate.overhead_reserve_micro_usd,
            "settings": json.dumps({"backend": "sagemaker", "model": "tiny-sd"}),
        },
    )

    # WHEN every chunk runs with its retries, late results land, and the batch is finalized
    late: list[AsyncNotification] = []
    for task, kinds in zip(tasks, drawn["attempts"], strict=True):
        _run_sagemaker_chunk(world, task, kinds, cap, late)
    while len(late) > 1:
        world.deliver(late.pop(0))
        _check_invariant(ledger, batch_id, cap)
    for _ in range(40):  # FinalizeBatch's Retry while endpoint results may still come
        try:
            report = finalize_batch(
                FinalizeEvent(batch_id=batch_id, bucket=s3_bucket, chunk_index_key=""),
                store=store,
                ledger=ledger,
                prices=prices,
                now=world.now,
            )
            break
        except EndpointResultsPending:
            world.wait(300)
    else:
        raise AssertionError("finalize still waits for endpoint results")
    for notification in late:  # a result after finalize wrote its hold off
        world.deliver(notification)

    # THEN spend never exceeded the cap and every hold was settled or written off
    summary = _check_invariant(ledger, batch_id, cap)
    assert summary["reserved_micro_usd"] == 0
    assert list(ledger.query_batch(batch_id, "RESERVATION#")) == []
    # AND every instance-second the endpoint used is charged: on image records or as rework,
    # or inside a written-off hold (an upper bound of what its request used)
    charged = summary["cost_micro_usd"] + summary.get("rework_micro_usd", 0)
    assert charged <= world.pipeline.billed_micro_usd
    assert world.pipeline.billed_micro_usd <= charged + summary.get("unsettled_micro_usd", 0)
    # AND every image is recorded once; the refused ones are in the redrive manifest
    records = list(ledger.image_records(batch_id))
    assert sorted(r["image_id"] for r in records) == sorted(images)
    exhausted = {r["image_id"] for r in records if r.get("failure_class") == "budget_exhausted"}
    if exhausted:
        assert report.status.value in {"PARTIAL", "FAILED"}
        redrive = s3_client.get_object(Bucket=s3_bucket, Key=f"reports/{batch_id}/redrive.jsonl")
        lines = [json.loads(line) for line in redrive["Body"].read().splitlines()]
        assert exhausted <= {line["id"] for line in lines[1:]}


def _sm_job(image_id: str) -> ImageJob:
    return ImageJob(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        index=1,
        line=2,
        prompt="a mug",
        width=64,
        height=64,
        seed=7,
        steps=4,
        guidance=0.0,
        model="tiny-sd",
    )
