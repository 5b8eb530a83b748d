"""A Bedrock call whose reply is lost, or cut by its bounded read timeout, may have been
billed with no image returned (issue 18). A user of a hard budget expects the bill never to
exceed the ledger: such a call is charged as labelled rework (the price of the image it
asked for), within its attempt's hold, and the chunk's retry makes the image.

The local Bedrock makes (and counts) the image; the reply is lost on its way back, as the
chaos mode's `reply-lost` does it: the request is sent and answered, then botocore raises
ReadTimeoutError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.httpsession import URLLib3Session
from imagebatch_local.fakes.bedrock_server import LocalBedrock
from imagebatch_local.fakes.renderers import NullRenderer

from imagebatch.aws.batch_evidence import read_batch_evidence
from imagebatch.aws.bedrock_runtime import BedrockImageBackend
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.costs.invariants import FINAL_STATUS, REDRIVE_IS_FAILED, check_batch
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.errors import ChunkUnfinished, ImageGenerationError, UnconfirmedCall
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkFile, ChunkResult, ChunkTask, ImageJob

MODEL = "stability.sd3-5-large-v1:0"
BATCH = "b-unconfirmed"
PRICE = load_catalogue().get(MODEL).price_for(1024, 1024).micro_usd_per_image  # type: ignore[union-attr]
CAP = 10**9


@pytest.fixture
def bedrock() -> Iterator[LocalBedrock]:
    with LocalBedrock(NullRenderer()) as server:
        yield server


class LoseReplies:
    """Loses the reply of the first `count` InvokeModel calls after Bedrock answered them."""

    def __init__(self, count: int) -> None:
        self.left = count
        self._http = URLLib3Session()

    def __call__(self, request: Any, **_: Any) -> None:
        if self.left <= 0:
            return
        self.left -= 1
        self._http.send(request)  # Bedrock makes and bills the image
        raise ReadTimeoutError(endpoint_url=request.url)


def bedrock_client(server: LocalBedrock, lose: LoseReplies) -> Any:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=server.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # as the stack's: botocore retries no Bedrock call itself (aws/clients.py)
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    client.meta.events.register("before-send.bedrock-runtime.InvokeModel", lose)
    return client


def jobs(n: int) -> list[ImageJob]:
    return [
        ImageJob(
            image_id=f"u{k}-1",
            item_id=f"u{k}",
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


def run_chunk(task: ChunkTask, store: BatchStore, ledger: Ledger, backend: Any) -> ChunkResult:
    """The chunk as Step Functions runs it: retried while it comes back unfinished."""
    from imagebatch.pipeline.generate import generate_chunk

    for retry in range(5):
        try:
            return generate_chunk(
                ChunkTask.model_validate(task.model_dump() | {"retry_count": retry}),
                store=store,
                ledger=ledger,
                backend=backend,
                catalogue=load_catalogue(),
                concurrency=1,
                time_left_ms=lambda: 600_000,
                commit_reserve_ms=1_000,
                prices=load_aws_prices().region("us-east-1"),
                clock=LambdaClock(512),
            )
        except ChunkUnfinished:
            continue
    raise AssertionError("the chunk never finished")


def test_a_call_whose_reply_was_lost_is_charged_as_rework_and_the_retry_makes_the_image(
    s3_client: Any,
    s3_bucket: str,
    dynamodb_client: Any,
    ledger_table: str,
    bedrock: LocalBedrock,
) -> None:
    store = BatchStore(s3_client, s3_bucket)
    ledger = Ledger(dynamodb_client, ledger_table)
    ledger.create_batch(BATCH, {"status": "RUNNING", "images_total": 2, "max_cost_micro_usd": CAP})
    ref = store.put_chunk(
        ChunkFile(
            batch_id=BATCH,
            chunk_id="00000",
            backend="bedrock",
            output_prefix="outputs/",
            images=jobs(2),
        )
    )
    task = ChunkTask(batch_id=BATCH, bucket=s3_bucket, chunk=ref)

    # GIVEN Bedrock makes the first image asked for, and its reply is lost (a read timeout)
    lose = LoseReplies(1)
    backend = BedrockImageBackend(bedrock_client(bedrock, lose), load_catalogue())

    # WHEN the chunk runs (and is retried while unfinished)
    result = run_chunk(task, store, ledger, backend)

    # THEN both images are made and recorded once; Bedrock made three
    assert lose.left == 0
    assert result.failed == 0
    assert bedrock.stats.images_returned == 3
    summary = ledger.get_batch(BATCH)
    assert summary is not None
    assert (summary.images_succeeded, summary.images_failed) == (2, 0)
    assert summary.cost_micro_usd == 2 * PRICE

    # AND the unconfirmed call is charged as rework, labelled as such, within the holds
    assert summary.rework_micro_usd == PRICE
    assert summary.unconfirmed_calls == 1
    assert summary.over_cap_micro_usd == 0
    assert summary.reserved_micro_usd == 0

    # AND the invariant checker finds the bill within the ledger (the batch is not
    # finalized here: its final status and redrive file are finalize's)
    evidence = read_batch_evidence(
        dynamodb_client,
        ledger_table,
        s3_client,
        s3_bucket,
        BATCH,
        paid_images=bedrock.stats.images_returned,
    )
    broken = [
        v.line()
        for v in check_batch(evidence)
        if v.invariant not in {FINAL_STATUS, REDRIVE_IS_FAILED}
    ]
    assert broken == []


class _Raising:
    """A bedrock-runtime client whose InvokeModel raises `error` (or whose reply's body
    does, when `in_body`)."""

    def __init__(self, error: Exception, *, in_body: bool = False) -> None:
        self._error = error
        self._in_body = in_body

    def invoke_model(self, **_: Any) -> dict[str, Any]:
        if not self._in_body:
            raise self._error
        error = self._error

        class Body:
            def read(self) -> bytes:
                raise error

        return {"body": Body()}


@pytest.mark.parametrize(
    ("error", "in_body"),
    [
        (ConnectionClosedError(endpoint_url="http://bedrock"), False),
        (ResponseStreamingError(error="connection reset"), True),
        (ReadTimeoutError(endpoint_url="http://bedrock"), True),
    ],
)
def test_a_reply_lost_or_cut_is_an_unconfirmed_call(error: Exception, in_body: bool) -> None:
    backend = BedrockImageBackend(_Raising(error, in_body=in_body), load_catalogue())  # type: ignore[arg-type]
    with pytest.raises(ImageGenerationError) as raised:
        backend.generate(jobs(1)[0])
    assert isinstance(raised.value, UnconfirmedCall)
    assert raised.value.transient


def test_a_call_that_never_connected_is_not_unconfirmed() -> None:
    never_connected = _Raising(EndpointConnectionError(endpoint_url="http://bedrock"))
    backend = BedrockImageBackend(never_connected, load_catalogue())  # type: ignore[arg-type]
    with pytest.raises(ImageGenerationError) as raised:
        backend.generate(jobs(1)[0])
    assert not isinstance(raised.value, UnconfirmedCall)
    assert raised.value.transient
