"""Faults at a chunk's commit (issue 18): connection errors and read timeouts are transient,
and a commit whose reply was lost is recognised as done, never a lost or doubled image.

The ledger and the store run on moto; the faults come from a thin wrapper around the client
that raises what botocore raises when the network fails."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from support.ledger_summary import as_item

import imagebatch.aws.ledger as ledger_module
from imagebatch.aws.ledger import COMMIT_ATTEMPTS, Ledger
from imagebatch.aws.s3_store import BatchStore, pending_commit_key
from imagebatch.costs.settlement import Settlement
from imagebatch.errors import ImagesAlreadyRecordedError, StorageError
from imagebatch.models.records import ImageOutcome
from imagebatch.pipeline.pending import save_pending

BATCH = "cats-0123456789abcdef"
MODEL = "stability.sd3-5-large-v1:0"


def _connection_error(kind: str) -> Exception:
    if kind == "endpoint":
        return EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
    if kind == "read":
        return ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
    return ConnectTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")


class _Outage:
    """The client, whose `operation` raises `error` for its first `times` calls."""

    def __init__(self, client: Any, operation: str, error: str, times: int) -> None:
        self._client = client
        self._operation = operation
        self._error = error
        self.left = times
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._operation:
            return real

        def call(**kwargs: Any) -> Any:
            self.calls += 1
            if self.left > 0:
                self.left -= 1
                raise _connection_error(self._error)
            return real(**kwargs)

        return call


def _outcome(image_id: str) -> ImageOutcome:
    return ImageOutcome(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        chunk_id="00000",
        status="SUCCEEDED",
        model=MODEL,
        backend="bedrock",
        seed=42,
        prompt_sha256="0" * 64,
        cost_micro_usd=80_000,
        output_key=f"outputs/{BATCH}/{image_id}.png",
    )


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "COMMIT_BACKOFF_S", 0.0)


@pytest.mark.parametrize("kind", ["endpoint", "read", "connect"])
def test_a_connection_error_at_commit_is_retried_like_a_throttle(
    dynamodb_client: Any, ledger_table: str, kind: str
) -> None:
    # GIVEN a batch and a DynamoDB endpoint that drops the first commit's connection
    Ledger(dynamodb_client, ledger_table).create_batch(BATCH, {})
    client: Any = _Outage(dynamodb_client, "transact_write_items", kind, times=1)
    # WHEN two images are committed
    Ledger(client, ledger_table).commit_images(BATCH, [_outcome("a-1"), _outcome("b-1")])
    # THEN the commit was retried and both images are recorded once
    assert client.calls == 2
    recorded = Ledger(dynamodb_client, ledger_table).recorded_image_ids(BATCH, ["a-1", "b-1"])
    assert recorded == {"a-1", "b-1"}


def test_a_connection_outage_at_commit_is_a_transient_storage_error(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN an outage longer than the commit's own retries
    Ledger(dynamodb_client, ledger_table).create_batch(BATCH, {})
    client: Any = _Outage(dynamodb_client, "transact_write_items", "endpoint", times=10**6)
    # WHEN a commit is tried THEN it ends as the storage error the pending file answers
    with pytest.raises(StorageError) as caught:
        Ledger(client, ledger_table).commit_images(BATCH, [_outcome("a-1")])
    assert caught.value.transient
    assert client.calls == COMMIT_ATTEMPTS


def test_a_connection_error_writing_the_pending_file_is_retried(
    s3_client: Any, s3_bucket: str
) -> None:
    # GIVEN an S3 endpoint that drops the pending file's first upload
    client: Any = _Outage(s3_client, "put_object", "endpoint", times=1)
    store = BatchStore(client, s3_bucket)
    # WHEN a failed commit's images are kept
    save_pending(
        store, BATCH, [_outcome("a-1")], Settlement(chunk_id="00000"), capped=False, tags={}
    )
    # THEN the pending file is there for the next attempt
    body = s3_client.get_object(Bucket=s3_bucket, Key=pending_commit_key(BATCH, "00000"))
    assert b"a-1" in body["Body"].read()


def test_a_pending_file_s3_cannot_take_is_a_transient_storage_error(
    s3_client: Any, s3_bucket: str
) -> None:
    # GIVEN an S3 outage as long as DynamoDB's
    client: Any = _Outage(s3_client, "put_object", "read", times=10**6)
    # WHEN the images are kept THEN the error is a transient StorageError, not botocore's
    with pytest.raises(StorageError) as caught:
        BatchStore(client, s3_bucket).put_pending_commit(BATCH, "00000", b"{}")
    assert caught.value.transient


class _ReplyLost:
    """The client, whose first `transact_write_items` lands but whose reply never arrives
    (a read timeout after DynamoDB applied it); `before` runs ahead of that first call."""

    def __init__(self, client: Any, before: Any = None) -> None:
        self._client = client
        self._before = before
        self.tokens: list[str | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.tokens.append(kwargs.get("ClientRequestToken"))
        if len(self.tokens) > 1:
            return self._client.transact_write_items(**kwargs)
        if self._before is not None:
            self._before()
            raise _connection_error("read")
        self._client.transact_write_items(**kwargs)
        raise _connection_error("read")


def test_a_commit_whose_reply_was_lost_is_done_not_failed(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a commit that lands but whose reply is lost
    Ledger(dynamodb_client, ledger_table).create_batch(BATCH, {})
    client: Any = _ReplyLost(dynamodb_client)
    # WHEN the two images are committed
    charged = Ledger(client, ledger_table).commit_images(BATCH, [_outcome("a-1"), _outcome("b-1")])
    # THEN the retry finds its own records: done, each image recorded and charged once
    summary = as_item(Ledger(dynamodb_client, ledger_table).get_batch(BATCH)) or {}
    assert summary["images_succeeded"] == 2
    assert summary["chunk_commits"] == 1
    assert charged == summary["cost_micro_usd"]


def test_commits_carry_one_idempotency_token_across_their_retries(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a commit whose first reply is lost, and a second commit of other images
    Ledger(dynamodb_client, ledger_table).create_batch(BATCH, {})
    client: Any = _ReplyLost(dynamodb_client)
    Ledger(client, ledger_table).commit_images(BATCH, [_outcome("a-1")])
    Ledger(client, ledger_table).commit_images(BATCH, [_outcome("b-1")])
    # THEN the retry repeated the token (DynamoDB answers it as done for 10 minutes), a
    # different commit has its own, and each fits DynamoDB's 36 characters
    first, retry, other = client.tokens
    assert first is not None and other is not None
    assert first == retry != other
    assert 1 <= len(first) <= 36 and 1 <= len(other) <= 36


def test_a_lost_reply_does_not_claim_records_another_attempt_made(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN another attempt of the chunk that records the image just before this commit,
    # whose own reply is then lost
    Ledger(dynamodb_client, ledger_table).create_batch(BATCH, {})
    other = Ledger(dynamodb_client, ledger_table)
    client: Any = _ReplyLost(
        dynamodb_client,
        before=lambda: other.commit_images(
            BATCH, [_outcome("a-1").model_copy(update={"cost_micro_usd": 70_000})]
        ),
    )
    # WHEN this attempt commits the same image THEN the records are not its own: refused
    with pytest.raises(ImagesAlreadyRecordedError):
        Ledger(client, ledger_table).commit_images(BATCH, [_outcome("a-1")])
    summary = as_item(other.get_batch(BATCH)) or {}
    assert summary["images_succeeded"] == 1 and summary["cost_micro_usd"] >= 70_000
