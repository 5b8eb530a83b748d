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
from imagebatch.backends.routing import Deployment, wake_micro_usd
from imagebatch.costs.overhead import UNATTRIBUTED, OverheadLine, Window
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.settlement import Settlement
from imagebatch.models.money import ceil_micro
from imagebatch.models.records import ImageOutcome
from imagebatch.models.sagemaker_contract import parse_buckets

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
