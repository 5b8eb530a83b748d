"""An endpoint request still queued when its chunk failed for good (issue 18, chaos seed 7):
its images are made and stored after the state machine gave up on the chunk. They must be
recorded SUCCEEDED once, charged once, and never listed for redrive.

S3 and DynamoDB are moto; finalize is run as the state machine runs it (its Retry, read from
statemachine/batch.asl.json); the endpoint is played by writing its output object and
recording its notification, as RecordResult does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.aws.stepfunctions import TaskTokens
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.costs.estimate import Shape, batch_usage, contact_sheet_reserve
from imagebatch.costs.prices import InstancePrice, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath, estimate_mixed_batch
from imagebatch.costs.usage import LambdaClock, Meter, Usage, price_usage
from imagebatch.errors import ChunkUnfinished, EndpointResultsPending, EndpointSubmitError
from imagebatch.models.money import ceil_micro
from imagebatch.models.records import ChunkFile, ChunkRef, ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
    SubmittedRequest,
)
from imagebatch.pipeline.finalize import BatchReport, FinalizeEvent, finalize_batch
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.pipeline.sagemaker_result import record_result
from imagebatch.pipeline.sagemaker_submit import SubmitTask, submit_chunk

ROOT = Path(__file__).resolve().parents[2]
BATCH = "late1"
PRICE = InstancePrice(
    instance_type="ml.test",
    accelerator="none",
    usd_per_hour=Decimal("3.6"),
    source="test",
    retrieved=date(2026, 11, 1),
)


class _Tokens(TaskTokens):
    """Records the answers instead of calling Step Functions."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str]] = []

    def succeed(self, token: str, output: str) -> bool:
        self.answers.append(("success", token))
        return True

    def fail(self, token: str, error: str, cause: str) -> bool:
        self.answers.append(("failure", token))
        return True


class _Endpoint(AsyncEndpoint):
    """Queues requests without a SageMaker, answering as InvokeEndpointAsync does."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.submitted: list[tuple[str, str]] = []

    def submit(
        self, input_location: str, inference_id: str, timeout_s: int | None = None
    ) -> SubmittedRequest:
        self.submitted.append((input_location, inference_id))
        return SubmittedRequest(
            inference_id=inference_id,
            output_location=f"s3://{self.bucket}/async-outputs/{inference_id}.out",
            failure_location=f"s3://{self.bucket}/async-failures/{inference_id}-error.out",
        )


def _jobs(n: int) -> list[ImageJob]:
    return [
        ImageJob(
            image_id=f"e-{i}",
            item_id="e",
            index=i,
            line=2,
            prompt="a vase",
            width=64,
            height=64,
            seed=i,
            model="sd15",
        )
        for i in range(1, n + 1)
    ]


def _adapters(store: BatchStore, ledger: Ledger) -> dict[str, Any]:
    """A new invocation's adapters: their meters count only what that invocation does."""
    fresh = Ledger(ledger.client, ledger.table)
    throughput = EndpointThroughput(fresh.client, fresh.table, fresh.meter)
    return {
        "store": BatchStore(store._s3, store.bucket),
        "ledger": fresh,
        "costing": EndpointCosting(
            endpoint_name="ep",
            price=PRICE,
            prices=load_aws_prices().region("us-east-1"),
            path=SageMakerPath(),
            throughput=throughput,
        ),
        "clock": LambdaClock(512),
    }


def _new_batch(
    s3_client: Any,
    s3_bucket: str,
    dynamodb_client: Any,
    ledger_table: str,
    budget: dict[str, int] | None = None,
) -> tuple[BatchStore, Ledger, ChunkRef]:
    """A batch of one endpoint chunk of three images; uncapped unless `budget` gives its cap
    and overhead reserve."""
    store = BatchStore(s3_client, s3_bucket)
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 3, **(budget or {})})
    # ml.test has no reference throughput: what the endpoint measured (0.1 s an image)
    EndpointThroughput(ledger.client, ledger.table).add(
        "ep", "sd15", {"64x64/30/cfg": (100_000, 1)}
    )
    ref = store.put_chunk(
        ChunkFile(
            batch_id=BATCH,
            chunk_id="00000",
            backend="sagemaker",
            output_prefix="outputs/",
            images=_jobs(3),
        )
    )
    store.put_chunk_index(BATCH, [ref])
    return store, ledger, ref


@pytest.fixture
def queued(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> tuple[BatchStore, Ledger, _Endpoint]:
    """An uncapped batch of one endpoint chunk whose request was queued, then whose Map child
    failed for good (RecordChunkFailure wrote its marker) while the request still waited."""
    return _queued(s3_client, s3_bucket, dynamodb_client, ledger_table)


def _queued(
    s3_client: Any,
    s3_bucket: str,
    dynamodb_client: Any,
    ledger_table: str,
    budget: dict[str, int] | None = None,
) -> tuple[BatchStore, Ledger, _Endpoint]:
    store, ledger, ref = _new_batch(s3_client, s3_bucket, dynamodb_client, ledger_table, budget)
    endpoint = _Endpoint(s3_bucket)
    task = SubmitTask(batch_id=BATCH, bucket=s3_bucket, chunk=ref, task_token="token-1")
    submit_chunk(task, endpoint=endpoint, tokens=_Tokens(), **_adapters(store, ledger))
    assert len(endpoint.submitted) == 1
    error = {"Error": "Lambda.ServiceException", "Cause": "injected"}
    dynamodb_client.put_item(
        TableName=ledger_table,
        Item={
            "pk": {"S": f"BATCH#{BATCH}"},
            "sk": {"S": "CHUNK#00000"},
            "status": {"S": "FAILED"},
            "chunk_key": {"S": ref.key},
            "error": {"S": error["Error"]},
            "error_detail": {"S": json.dumps(error)},
        },
    )
    return store, ledger, endpoint


def _run_the_request(
    store: BatchStore,
    ledger: Ledger,
    input_location: str,
    inference_id: str,
    tokens: _Tokens | None = None,
) -> None:
    """The endpoint makes the request's images, stores them and its output object, and
    RecordResult records the notification."""
    invocation = ChunkInvocation.model_validate_json(store.read_uri(input_location))
    images = []
    for n, job in enumerate(invocation.images):
        key = f"outputs/{BATCH}/{job.image_id}.png"
        store.put_image(key, b"\x89PNG made by the endpoint", {"seed": str(job.seed)})
        images.append(
            ServedImage(image_id=job.image_id, status="SUCCEEDED", seed=job.seed, key=key, call=n)
        )
    result = InvocationResult(
        batch_id=BATCH,
        chunk_id=invocation.chunk_id,
        accelerator="cpu",
        max_batch=1,
        images=images,
        calls=[
            ServingCall(call=n, width=64, height=64, steps=30, images=1, seconds=0.2)
            for n in range(len(images))
        ],
    )
    output = f"async-outputs/{inference_id}.out"
    store.put_json(output, result.model_dump_json().encode())
    notification = AsyncNotification.model_validate(
        {
            "invocationStatus": "Completed",
            "inferenceId": inference_id,
            "requestParameters": {"endpointName": "ep", "inputLocation": input_location},
            "responseParameters": {"outputLocation": f"s3://{store.bucket}/{output}"},
        }
    )
    record_result(notification, tokens=tokens or _Tokens(), **_adapters(store, ledger))


def _finalize_retried_errors() -> set[str]:
    """The errors FinalizeBatch's Retry covers: a finalize that raises one is run again."""
    asl = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
    retries = asl["States"]["FinalizeBatch"]["Retry"]
    return {name for retry in retries for name in retry["ErrorEquals"]}


def _finalize_as_the_state_machine_does(
    store: BatchStore, ledger: Ledger, meanwhile: Callable[[], None]
) -> BatchReport:
    """FinalizeBatch with its Retry: `meanwhile` is what happens during the first retry's
    wait (the endpoint finishes the request); if finalize never waits, it happens after."""
    retried = _finalize_retried_errors()
    happened = False
    for _ in range(5):
        try:
            report = finalize_batch(
                FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
                prices=load_aws_prices().region("us-east-1"),
                clock=LambdaClock(512),
                **{k: v for k, v in _adapters(store, ledger).items() if k in ("store", "ledger")},
            )
        except Exception as exc:
            if type(exc).__name__ not in retried:
                raise
            if not happened:
                meanwhile()
                happened = True
            continue
        if not happened:
            meanwhile()  # the request finishes after finalize: a late result
        return report
    raise AssertionError("finalize still waiting after its result was recorded")


def test_a_request_queued_when_its_chunk_failed_is_recorded_not_redriven(
    queued: tuple[BatchStore, Ledger, _Endpoint],
) -> None:
    store, ledger, endpoint = queued
    ((input_location, inference_id),) = endpoint.submitted

    # WHEN finalize runs while the request is queued, and the endpoint then makes its images
    report = _finalize_as_the_state_machine_does(
        store, ledger, lambda: _run_the_request(store, ledger, input_location, inference_id)
    )

    # THEN every image the endpoint made and stored has one SUCCEEDED record
    records = list(ledger.image_records(BATCH))
    assert sorted((r["image_id"], r["status"]) for r in records) == [
        ("e-1", "SUCCEEDED"),
        ("e-2", "SUCCEEDED"),
        ("e-3", "SUCCEEDED"),
    ]
    # AND is charged once (0.2 s at $3.6/h = 200 µ$ each), on the batch that settled
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert summary.cost_micro_usd == 600
    assert report.status == "SUCCEEDED"
    assert (report.images_succeeded, report.images_failed) == (3, 0)
    # AND nothing is listed for redrive
    assert report.redrive_key is None
    assert list(store.list_keys(f"reports/{BATCH}/redrive")) == []


def test_a_retried_submit_of_a_queued_request_points_it_at_the_new_token(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    store, ledger, ref = _new_batch(s3_client, s3_bucket, dynamodb_client, ledger_table)
    endpoint = _Endpoint(s3_bucket)
    # GIVEN SubmitChunk queued the chunk's request, then its Lambda was killed before it
    # returned (Sandbox.Timedout): the state machine's Retry runs it again, with a new token
    first = SubmitTask(batch_id=BATCH, bucket=s3_bucket, chunk=ref, task_token="token-1")
    submit_chunk(first, endpoint=endpoint, tokens=_Tokens(), **_adapters(store, ledger))
    retry = first.model_copy(update={"task_token": "token-2", "retry_count": 1})
    tokens = _Tokens()
    # WHEN the retry runs
    submit_chunk(retry, endpoint=endpoint, tokens=tokens, **_adapters(store, ledger))
    # THEN the chunk is one request on the endpoint, not two
    assert len(endpoint.submitted) == 1
    # AND its result answers the token the state machine waits on
    ((input_location, inference_id),) = endpoint.submitted
    invocation = ChunkInvocation.model_validate_json(store.read_uri(input_location))
    assert invocation.task_token == "token-2"
    answers = _Tokens()
    _run_the_request(store, ledger, input_location, inference_id, answers)
    assert answers.answers == [("success", "token-2")]
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert summary.images_succeeded == 3


class _Refusing(_Endpoint):
    """SageMaker refuses every request (throttled): nothing is queued."""

    def submit(
        self, input_location: str, inference_id: str, timeout_s: int | None = None
    ) -> SubmittedRequest:
        raise EndpointSubmitError("ThrottlingException", transient=True, ambiguous=False)


def test_a_retry_after_a_refused_submit_sends_a_new_request(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    store, ledger, ref = _new_batch(s3_client, s3_bucket, dynamodb_client, ledger_table)
    # GIVEN an attempt whose request SageMaker refused (nothing queued: ChunkUnfinished)
    failing = SubmitTask(batch_id=BATCH, bucket=s3_bucket, chunk=ref, task_token="token-x")
    with pytest.raises(ChunkUnfinished):
        submit_chunk(
            failing, endpoint=_Refusing(s3_bucket), tokens=_Tokens(), **_adapters(store, ledger)
        )
    # WHEN the state machine retries it
    endpoint = _Endpoint(s3_bucket)
    retry = failing.model_copy(update={"task_token": "token-y", "retry_count": 1})
    submit_chunk(retry, endpoint=endpoint, tokens=_Tokens(), **_adapters(store, ledger))
    # THEN the retry sends a request of its own: the refused one cannot answer
    assert len(endpoint.submitted) == 1
    ((input_location, _),) = endpoint.submitted
    invocation = ChunkInvocation.model_validate_json(store.read_uri(input_location))
    assert invocation.task_token == "token-y"


class _Tally(Meter):
    """A meter that also keeps everything ever added to it: what one invocation counted,
    whoever took the counts meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: dict[str, int] = {}

    def add(self, **counts: int) -> None:
        super().add(**counts)
        for name, value in counts.items():
            self.counted[name] = self.counted.get(name, 0) + value


class _Clock(LambdaClock):
    """An invocation that ran 250 ms, whatever the machine: its billed duration is known."""

    def elapsed_s(self) -> float:
        return 0.25


def _use(ledger: Ledger) -> tuple[Usage, int]:
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    return Usage.from_summary(summary), summary.spent_micro_usd


def _minus(after: Usage, before: Usage) -> Usage:
    return Usage(**{k: v - getattr(before, k) for k, v in after.model_dump().items()})


def test_each_run_that_waits_for_an_endpoint_result_is_charged_to_its_batch(
    queued: tuple[BatchStore, Ledger, _Endpoint],
) -> None:
    store, ledger, endpoint = queued
    ((input_location, inference_id),) = endpoint.submitted
    prices = load_aws_prices().region("us-east-1")
    event = FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused")
    waits: list[int] = []
    # WHEN finalize runs twice while the request is still queued (each raises
    # EndpointResultsPending, which FinalizeBatch's Retry runs again)
    for _ in range(2):
        before, spent_before = _use(ledger)
        s3_meter, ddb_meter = _Tally(), _Tally()
        with pytest.raises(EndpointResultsPending):
            finalize_batch(
                event,
                store=BatchStore(store._s3, store.bucket, s3_meter),
                ledger=Ledger(ledger.client, ledger.table, ddb_meter),
                prices=prices,
                clock=_Clock(512),
            )
        after, spent_after = _use(ledger)
        used = _minus(after, before)
        # THEN the run's Lambda request, its billed duration (250 ms at 512 MB) and the
        # retry's state transition are on the batch
        assert (used.lambda_requests, used.lambda_mb_ms, used.sfn_transitions) == (1, 128_000, 1)
        # AND every S3 and DynamoDB request it counted, and the writes of its own charge
        counted = Usage(**s3_meter.counted) + Usage(**ddb_meter.counted)
        assert used.s3_put_requests == counted.s3_put_requests > 0  # its LISTs
        assert used.s3_get_requests == counted.s3_get_requests
        assert used.ddb_read_units == counted.ddb_read_units > 0
        assert used.ddb_write_units > counted.ddb_write_units
        # AND charged at the prices finalize's own charge uses, rounded up once, to the µ$
        assert spent_after - spent_before == ceil_micro(price_usage(used, prices).total) > 0
        waits.append(spent_after - spent_before)

    # WHEN the endpoint then makes the images and finalize runs again
    _run_the_request(store, ledger, input_location, inference_id)
    _, spent_before_settle = _use(ledger)
    report = finalize_batch(
        event,
        store=BatchStore(store._s3, store.bucket),
        ledger=Ledger(ledger.client, ledger.table),
        prices=prices,
        clock=_Clock(512),
    )
    # THEN the batch's charge holds both waiting runs', and the day rollups add up to it
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert report.status == "SUCCEEDED"
    assert report.charged_micro_usd == summary.spent_micro_usd > spent_before_settle
    assert _rolled(ledger) == summary.spent_micro_usd
    waited = [r for r in ledger.query_batch(BATCH, "REQUEST#") if "finalize-wait" in r["sk"]]
    assert len(waited) == 2
    assert sum(waits) > 0


def test_a_capped_batch_pays_a_waiting_run_from_its_overhead_reserve(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    cap, reserve = 10_000_000, 50_000
    budget = {"max_cost_micro_usd": cap, "overhead_reserve_micro_usd": reserve}
    store, ledger, _ = _queued(s3_client, s3_bucket, dynamodb_client, ledger_table, budget)
    before = ledger.get_batch(BATCH)
    assert before is not None
    rolled_before = _rolled(ledger)
    # WHEN finalize runs while the request is still queued
    with pytest.raises(EndpointResultsPending):
        finalize_batch(
            FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
            store=BatchStore(store._s3, store.bucket),
            ledger=Ledger(ledger.client, ledger.table),
            prices=load_aws_prices().region("us-east-1"),
            clock=_Clock(512),
        )
    after = ledger.get_batch(BATCH)
    assert after is not None
    charge = after.spent_micro_usd - before.spent_micro_usd
    # THEN its charge comes out of the overhead reserve, the budget's sum still the cap
    assert charge > 0
    assert after.overhead_reserve_micro_usd == reserve - charge
    assert after.budget_left_micro_usd == before.budget_left_micro_usd
    assert (
        after.spent_micro_usd
        + after.reserved_micro_usd
        + after.budget_left_micro_usd
        + after.overhead_reserve_micro_usd
        == cap
    )
    assert after.over_cap_micro_usd == 0
    # AND the day's rollup holds it
    assert _rolled(ledger) - rolled_before == charge


def _rolled(ledger: Ledger) -> int:
    return sum(int(r.get("spent_micro_usd", 0)) for r in ledger.query_batch(BATCH, "DAY#"))


def test_waiting_runs_never_take_a_capped_batch_over_its_cap(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a capped batch holding, as ingest does, the reserve its estimate names
    prices = load_aws_prices().region("us-east-1")
    estimate = estimate_mixed_batch(
        Decimal(0), [], [(3, 1)], prices, Shape(), path=SageMakerPath(), capped=True, pixels=4096
    )
    budget = {
        "max_cost_micro_usd": 10_000_000,
        "overhead_reserve_micro_usd": estimate.overhead_reserve_micro_usd,
    }
    store, ledger, _ = _queued(s3_client, s3_bucket, dynamodb_client, ledger_table, budget)
    (retry,) = [
        r
        for r in json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())["States"][
            "FinalizeBatch"
        ]["Retry"]
        if "EndpointResultsPending" in r["ErrorEquals"]
    ]
    # WHEN finalize waits as often as FinalizeBatch's Retry lets it (the first run and each
    # retry), the request never answering
    for _ in range(1 + retry["MaxAttempts"]):
        with pytest.raises(EndpointResultsPending):
            finalize_batch(
                FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
                store=BatchStore(store._s3, store.bucket),
                ledger=Ledger(ledger.client, ledger.table),
                prices=prices,
                clock=_Clock(Shape().finalize_memory_mb),
            )
    # THEN the runs the reserve could spare were paid from it, and none went over the cap
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert summary.use_lambda_requests >= 1  # the first wait, at least, was charged
    assert summary.over_cap_micro_usd == 0
    assert summary.overhead_reserve_micro_usd >= 0
    assert summary.spent_micro_usd <= budget["max_cost_micro_usd"]
    # AND finalize's own settle still finds what ingest reserved for it (the rest of the
    # reserve), so it settles within the cap once the request answers or is given up
    kept = batch_usage(0, 0, Shape()) + contact_sheet_reserve(3, 0, Shape())
    assert summary.overhead_reserve_micro_usd >= ceil_micro(price_usage(kept, prices).total)


def test_a_waiting_run_its_capped_batch_cannot_spare_is_not_charged(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a capped batch whose overhead reserve holds 1 µ$
    budget = {"max_cost_micro_usd": 10_000_000, "overhead_reserve_micro_usd": 1}
    store, ledger, _ = _queued(s3_client, s3_bucket, dynamodb_client, ledger_table, budget)
    before = ledger.get_batch(BATCH)
    assert before is not None
    # WHEN finalize waits
    with pytest.raises(EndpointResultsPending):
        finalize_batch(
            FinalizeEvent(batch_id=BATCH, bucket=store.bucket, chunk_index_key="unused"),
            store=BatchStore(store._s3, store.bucket),
            ledger=Ledger(ledger.client, ledger.table),
            prices=load_aws_prices().region("us-east-1"),
            clock=_Clock(512),
        )
    # THEN the run is not charged: the cap stays hard, nothing is over it
    after = ledger.get_batch(BATCH)
    assert after is not None
    assert after.spent_micro_usd == before.spent_micro_usd
    assert after.overhead_reserve_micro_usd == 1
    assert after.over_cap_micro_usd == 0
