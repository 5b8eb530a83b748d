"""The endpoint's wake is held at admission: a capped batch that wakes the endpoint from
zero keeps its cold start and idle tail out of what its chunks may spend, so when the
observer charges the window after the scale-in the batch pays its whole wake within its cap
and nothing of it is left unattributed. N such batches, spaced past the scale-in, each wake
the endpoint: each pays its own wake, within its cap."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from support.endpoint_day import at

from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.backends.routing import Deployment, wake_micro_usd
from imagebatch.costs.overhead import (
    UNATTRIBUTED,
    EndpointRequest,
    InstanceSession,
    OverheadLine,
    Window,
    attribute_window,
    windows,
)
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.settlement import Settlement
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.money import ceil_micro, round_micro
from imagebatch.models.records import ImageOutcome
from imagebatch.models.sagemaker_contract import parse_buckets
from imagebatch.pipeline.finalize import FinalizeEvent, finalize_batch

ENDPOINT = "stack-images"
INF2 = load_aws_prices().region("us-east-1").instance("ml.inf2.xlarge")
WAKE = ceil_micro(
    wake_micro_usd(
        Deployment(
            endpoint_name=ENDPOINT,
            price=INF2,
            model_id="sd21",
            buckets=parse_buckets("512x512"),
            stands_in_for=frozenset(),
            at_zero=True,
        )
    )
)
# a small batch: a few images' worth of budget beside its wake
CAP = WAKE + 50_000


def _spend_what_chunks_may(ledger: Ledger, batch_id: str) -> int:
    """The batch's chunks hold and spend every micro-dollar the ledger lets them."""
    summary = ledger.get_batch(batch_id)
    assert summary is not None
    amount = summary.budget_left_micro_usd
    assert ledger.reserve(batch_id, "00000", amount) == amount
    made = ImageOutcome(
        image_id="a-1",
        item_id="a",
        chunk_id="00000",
        status="SUCCEEDED",
        model="sd21",
        backend="sagemaker",
        seed=1,
        prompt_sha256="0" * 64,
        cost_micro_usd=amount,
    )
    settlement = Settlement(chunk_id="00000", reserved_micro_usd=amount, has_reservation=True)
    return ledger.commit_images(batch_id, [made], settlement, capped=True)


def _wake_window(batch_id: str, start_s: float) -> Window:
    cold = WAKE // 2
    return Window(
        start=at(start_s),
        end=at(start_s + 960),
        closed=True,
        sessions=(),
        instance_seconds=Decimal(960),
        billed_micro_usd=WAKE,
        lines=(
            OverheadLine(charged_to=batch_id, kind="cold_start", micro_usd=cold),
            OverheadLine(charged_to=batch_id, kind="idle", micro_usd=WAKE - cold),
        ),
    )


def test_small_capped_batches_spaced_past_the_scale_in_each_pay_their_wake_within_cap(
    dynamodb_client: Any, ledger_table: str
) -> None:
    ledger = Ledger(dynamodb_client, ledger_table)
    store = EndpointUsageStore(dynamodb_client, ledger_table)
    for n in range(3):
        batch_id = f"small-{n}"
        # GIVEN a capped batch admitted with the endpoint at zero (ingest holds the wake)
        assert ledger.create_batch(
            batch_id, {"max_cost_micro_usd": CAP, "endpoint_wake_micro_usd": WAKE}
        )
        # WHEN its chunks spend all they may, and the endpoint scales in 16 minutes later
        _spend_what_chunks_may(ledger, batch_id)
        charged = store.commit_window(ENDPOINT, _wake_window(batch_id, n * 16 * 60))
        # THEN its whole wake is charged to it, nothing unattributed, within its cap
        assert charged.by_batch() == {batch_id: WAKE}
        assert UNATTRIBUTED not in charged.by_batch()
        summary = ledger.get_batch(batch_id)
        assert summary is not None
        assert summary.spent_micro_usd <= CAP
        assert summary.spent_micro_usd == CAP
        assert summary.reserved_micro_usd == 0


def _bedrock_outcome(batch_id: str, cost: int) -> ImageOutcome:
    return ImageOutcome(
        image_id="b-1",
        item_id="b",
        chunk_id="00000",
        status="SUCCEEDED",
        model="stability.sd3-5-large-v1:0",
        backend="bedrock",
        seed=1,
        prompt_sha256="0" * 64,
        cost_micro_usd=cost,
        output_key=f"outputs/{batch_id}/b-1.png",
    )


def _finalize(s3_client: Any, s3_bucket: str, ledger: Ledger, batch_id: str) -> None:
    store = BatchStore(s3_client, s3_bucket)
    store.put_chunk_index(batch_id, [])
    finalize_batch(
        FinalizeEvent(batch_id=batch_id, bucket=s3_bucket, chunk_index_key="unused"),
        store=store,
        ledger=ledger,
        prices=load_aws_prices().region("us-east-1"),
        clock=LambdaClock(512),
    )


def test_finalize_releases_the_wake_of_a_batch_the_endpoint_never_served(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    ledger = Ledger(dynamodb_client, ledger_table)
    # GIVEN a capped batch admitted with the endpoint at zero (its wake held) whose images
    # all went elsewhere (Bedrock here; reuse alike): no request reached the endpoint
    batch_id = "never-served"
    assert ledger.create_batch(
        batch_id,
        {"status": "RUNNING", "max_cost_micro_usd": CAP, "endpoint_wake_micro_usd": WAKE},
    )
    ledger.commit_images(batch_id, [_bedrock_outcome(batch_id, 1_000)], capped=True)
    # WHEN it finalizes
    _finalize(s3_client, s3_bucket, ledger, batch_id)
    # THEN no window will ever charge it, so its wake is back in budget_left, nothing held
    summary = ledger.get_batch(batch_id)
    assert summary is not None
    assert summary.wake_held_micro_usd == 0
    assert summary.reserved_micro_usd == 0
    assert (
        summary.spent_micro_usd + summary.budget_left_micro_usd + summary.overhead_reserve_micro_usd
        == CAP
    )


def _request(batch_id: str, received_s: float, done_s: float, seconds: int) -> EndpointRequest:
    return EndpointRequest(
        batch_id=batch_id,
        request_id=f"{batch_id}-r",
        received_at=at(received_s),
        completed_at=at(done_s),
        inference_seconds=Decimal(seconds),
        inference_micro_usd=round_micro(Decimal(seconds) * INF2.micro_usd_per_second),
    )


def test_a_served_batch_keeps_its_wake_past_finalize_and_the_window_settles_it_once(
    s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str
) -> None:
    ledger = Ledger(dynamodb_client, ledger_table)
    store = EndpointUsageStore(dynamodb_client, ledger_table)
    # GIVEN two capped batches that each held a wake: "first" waited through the instance's
    # cold start, "second" was received once it was ready, so the window's whole overhead is
    # the cold start, all first's, and second's share is nothing
    first = _request("first", 10, 150, 50)
    second = _request("second", 150, 200, 50)
    for request in (first, second):
        assert ledger.create_batch(
            request.batch_id,
            {"status": "RUNNING", "max_cost_micro_usd": CAP, "endpoint_wake_micro_usd": WAKE},
        )
        made = _bedrock_outcome(request.batch_id, request.inference_micro_usd).model_copy(
            update={"backend": "sagemaker", "model": "sd21"}
        )
        settlement = Settlement(
            chunk_id="00000", endpoint=ENDPOINT, endpoint_request=request, request_key="r"
        )
        ledger.commit_images(request.batch_id, [made], settlement, capped=True)
        # finalize runs before the scale-in: the endpoint served the batch, so the wake waits
        _finalize(s3_client, s3_bucket, ledger, request.batch_id)
        summary = ledger.get_batch(request.batch_id)
        assert summary is not None
        assert summary.wake_held_micro_usd == WAKE
    session = InstanceSession(start=at(0), ready=at(100), end=at(200))
    window = windows([session], [])[0]
    attributed = attribute_window(window, [first, second], INF2)
    assert set(attributed.by_batch()) == {"first"}
    # WHEN the observer charges the window, twice (a run again)
    store.commit_window(ENDPOINT, attributed)
    store.commit_window(ENDPOINT, attributed)
    # THEN each wake is settled exactly once: first paid its cold start from it, second's
    # came back whole; nothing is held
    for request, share in ((first, attributed.by_batch()["first"]), (second, 0)):
        summary = ledger.get_batch(request.batch_id)
        assert summary is not None
        assert summary.wake_held_micro_usd == 0
        assert summary.reserved_micro_usd == 0
        assert summary.endpoint_overhead_micro_usd == share
