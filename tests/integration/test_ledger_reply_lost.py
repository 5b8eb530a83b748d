"""A ledger write whose reply is lost (issue 18, the chaos e2e's seed 42): DynamoDB did the
write, the reply never came, botocore sent the same request again. Against a moto server, a
botocore before-send hook performs the request on the wire and then raises the
ReadTimeoutError a lost reply is, so botocore's own retry sends it a second time, exactly
as on AWS. Every ADD to the ledger must count once. The server honours TransactWriteItems'
ClientRequestToken as DynamoDB does (moto_workarounds.honour_transaction_tokens): botocore
fills one in, the same on every resend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session
from imagebatch_local.cloud import moto_workarounds
from moto.server import ThreadedMotoServer
from support.moto_fixtures import create_ledger_table

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus
from imagebatch.pipeline.finalize_wait import charge_waiting_run

REGION = "us-east-1"
BATCH = "b-lost"
MODEL = "stability.sd3-5-large-v1:0"
SHAPE = "64x64/30/cfg"


@pytest.fixture
def moto_dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto_workarounds.reset_moto(f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto_workarounds.honour_transaction_tokens()
    try:
        yield boto3.client("dynamodb", region_name=REGION, endpoint_url=f"http://{host}:{port}")
    finally:
        moto_workarounds.restore_all()
        server.stop()


WRITES = (b"UpdateItem", b"TransactWriteItems", b"PutItem")


def _lose_first_reply(client: Any, matches: Callable[[bytes], bool]) -> list[bytes]:
    """The first write whose body `matches` is performed, then its reply is lost."""
    http = URLLib3Session()
    lost: list[bytes] = []

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
        target = request.headers.get("X-Amz-Target", b"")
        target = target if isinstance(target, bytes) else target.encode()
        if lost or not target.endswith(WRITES) or not matches(body):
            return None
        lost.append(body)
        http.send(request)  # DynamoDB does the write ...
        raise ReadTimeoutError(endpoint_url=request.url)  # ... and its reply never comes

    client.meta.events.register("before-send.dynamodb", before_send)
    return lost


def test_a_rollup_whose_reply_was_lost_counts_once(moto_dynamodb: Any) -> None:
    # GIVEN a batch charged 123,456 µ$ outside its chunk commits, nothing rolled up yet
    ledger = Ledger(moto_dynamodb, create_ledger_table(moto_dynamodb))
    ledger.create_batch(BATCH, {"status": "SUCCEEDED", "images_total": 1, "models": [MODEL]})
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    summary = summary.model_copy(update={"spent_micro_usd": 123_456})
    # AND the reply to the write on the day's rollup is lost
    lost = _lose_first_reply(moto_dynamodb, lambda body: b"DAY#" in body)

    # WHEN finalize rolls the remainder up
    ledger.roll_up_remainder(BATCH, summary)

    # THEN the day's rollups hold the charge once
    assert lost, "no rollup write was seen"
    rolled = sum(int(r.get("spent_micro_usd", 0)) for r in ledger.query_batch(BATCH, "DAY#"))
    assert rolled == 123_456


def test_a_hold_whose_reply_was_lost_is_held_once(moto_dynamodb: Any) -> None:
    # GIVEN a capped batch with 1,000 µ$ left
    ledger = Ledger(moto_dynamodb, create_ledger_table(moto_dynamodb))
    ledger.create_batch(
        BATCH,
        BatchRecord(
            batch_id=BATCH,
            status=BatchStatus.RUNNING,
            models=[MODEL],
            backend="bedrock",
            max_cost_micro_usd=1_000,
            budget_left_micro_usd=1_000,
        ),
    )
    # AND the reply to the transaction that holds budget is lost
    lost = _lose_first_reply(moto_dynamodb, lambda body: b"RESERVATION#" in body)

    # WHEN a chunk holds 120
    held = ledger.reserve(BATCH, "00000@a1", 120)

    # THEN it is held once, and nothing is written off as spent
    assert lost, "no hold write was seen"
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert held == 120
    assert (summary.spent_micro_usd, summary.budget_left_micro_usd) == (0, 880)
    assert ledger.hold_amount(BATCH, "00000@a1") == 120


def test_a_waiting_finalize_run_whose_charge_reply_was_lost_is_charged_once(
    moto_dynamodb: Any,
) -> None:
    # GIVEN a running batch, and a finalize run that waits for an endpoint result
    ledger = Ledger(moto_dynamodb, create_ledger_table(moto_dynamodb))
    ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 1, "models": [MODEL]})
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    # (no S3 call is made: the store only hands over what its meter counted)
    store = BatchStore(boto3.client("s3", region_name=REGION), "unused")
    clock = LambdaClock(512, request_id="req-1")
    prices = load_aws_prices().region(REGION)
    # AND the reply to the transaction that charges the run is lost
    lost = _lose_first_reply(moto_dynamodb, lambda body: b"finalize-wait" in body)

    # WHEN the run charges what it used, and (the same run id) charges again
    charged = charge_waiting_run(summary, store=store, ledger=ledger, prices=prices, clock=clock)
    again = charge_waiting_run(summary, store=store, ledger=ledger, prices=prices, clock=clock)

    # THEN the batch and the day's rollup hold the charge once
    assert lost, "no charge write was seen"
    after = ledger.get_batch(BATCH)
    assert after is not None
    assert charged > 0
    assert again == 0
    assert after.spent_micro_usd == charged
    assert after.use_lambda_requests == 1
    rolled = sum(int(r.get("spent_micro_usd", 0)) for r in ledger.query_batch(BATCH, "DAY#"))
    assert rolled == charged


def test_a_token_sent_again_with_other_items_is_refused(moto_dynamodb: Any) -> None:
    # GIVEN a transaction that landed under a token
    table = create_ledger_table(moto_dynamodb)

    def put(sk: str) -> Any:
        item = {"pk": {"S": "T"}, "sk": {"S": sk}}
        return {"Put": {"TableName": table, "Item": item}}

    moto_dynamodb.transact_write_items(TransactItems=[put("a")], ClientRequestToken="t-1")
    # WHEN the same token comes with other items, THEN DynamoDB refuses it, as AWS does
    with pytest.raises(moto_dynamodb.exceptions.IdempotentParameterMismatchException):
        moto_dynamodb.transact_write_items(TransactItems=[put("b")], ClientRequestToken="t-1")
    # AND the same request again writes nothing more, and succeeds
    moto_dynamodb.transact_write_items(TransactItems=[put("a")], ClientRequestToken="t-1")
    keys = moto_dynamodb.scan(TableName=table)["Items"]
    assert [k["sk"]["S"] for k in keys] == ["a"]


def test_a_throughput_add_whose_reply_was_lost_counts_once(moto_dynamodb: Any) -> None:
    # GIVEN an endpoint that measured one call of a shape: 2 s for one image
    ledger = Ledger(moto_dynamodb, create_ledger_table(moto_dynamodb))
    throughput = EndpointThroughput(ledger.client, ledger.table, ledger.meter)
    throughput.add("ep", "sd15", {SHAPE: (2_000_000, 1)})
    # AND the reply to the next add is lost
    lost = _lose_first_reply(moto_dynamodb, lambda body: b"THROUGHPUT#" in body)

    # WHEN a result adds its call, 4 s for two images
    throughput.add("ep", "sd15", {SHAPE: (4_000_000, 2)})

    # THEN the call counts once: 6 s for three images
    assert lost, "no throughput write was seen"
    measured = throughput.measured("ep", "sd15", [SHAPE])[SHAPE]
    assert (measured.seconds, measured.images) == (Decimal(6), 3)


def test_two_results_with_the_same_sums_both_count(moto_dynamodb: Any) -> None:
    # GIVEN two results whose calls measured exactly the same (idempotent per call, not per
    # content: a second request of one shape is new work)
    ledger = Ledger(moto_dynamodb, create_ledger_table(moto_dynamodb))
    throughput = EndpointThroughput(ledger.client, ledger.table, ledger.meter)

    # WHEN both are added
    throughput.add("ep", "sd15", {SHAPE: (2_000_000, 1)})
    throughput.add("ep", "sd15", {SHAPE: (2_000_000, 1)})

    # THEN both count
    measured = throughput.measured("ep", "sd15", [SHAPE])[SHAPE]
    assert (measured.seconds, measured.images) == (Decimal(4), 2)
