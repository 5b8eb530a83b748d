"""Query API tenancy (QueryTenancy=true): the caller's principal tag imagebatch:team names the
values of the batch tag `team` it may read; /batches, /batches/{id}, its items and /costs
answer only those batches. The caller arrives as API Gateway's IAM authorization gives it
(requestContext.authorizer.iam.userArn); its role's tags are read with iam:ListRoleTags on
moto's IAM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from imagebatch_local.cloud.http_api import LocalQueryApi, load_query_handler

from imagebatch.aws.clients import reset_clients
from imagebatch.aws.ledger import Ledger
from imagebatch.models.records import ImageOutcome

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"


def _outcome(image_id: str) -> ImageOutcome:
    return ImageOutcome(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        chunk_id="00000",
        status="SUCCEEDED",
        model="stability.sd3-5-large-v1:0",
        backend="bedrock",
        seed=1,
        prompt_sha256="0" * 64,
        cost_micro_usd=80_000,
    )


def _role(name: str, tags: dict[str, str]) -> str:
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument="{}",
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/session-1"


@pytest.fixture
def handler(
    monkeypatch: pytest.MonkeyPatch, dynamodb_client: Any, ledger_table: str
) -> Iterator[Any]:
    """Three batches: red (team=red), blue (team=blue), untagged; tenancy on."""
    monkeypatch.setenv("LEDGER_TABLE", ledger_table)
    monkeypatch.setenv("DATA_BUCKET", "unused-bucket")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("QUERY_TENANCY", "true")
    ledger = Ledger(dynamodb_client, ledger_table)
    for n, (batch_id, tags) in enumerate(
        [("red-1", {"team": "red"}), ("blue-1", {"team": "blue"}), ("loose-1", {})]
    ):
        ledger.create_batch(
            batch_id,
            {
                "status": "RUNNING",
                "images_total": 1,
                "tags": tags,
                "created_at": f"2026-11-2{n}T10:00:00.000+00:00",
            },
        )
        ledger.commit_images(batch_id, [_outcome(f"{batch_id}-img-1")], tags=tags)
    reset_clients()
    yield load_query_handler(REPO / "functions" / "query")
    reset_clients()


def test_a_tagged_caller_reads_only_its_teams_batches(handler: Any) -> None:
    # GIVEN a caller whose role is tagged imagebatch:team=red
    api = LocalQueryApi(handler, caller_arn=_role("red-reader", {"imagebatch:team": "red"}))

    # THEN the list, one batch, its items and the costs hold only red's
    listed = api.get("/batches")["batches"]
    assert [b["batch_id"] for b in listed] == ["red-1"]
    assert api.get("/batches/red-1")["batch_id"] == "red-1"
    assert api.call("GET", "/batches/blue-1")[0] == 404
    assert api.call("GET", "/batches/blue-1/items")[0] == 404
    assert api.call("GET", "/batches/loose-1")[0] == 404
    costs = api.get("/costs", {"group_by": "batch", "since": "2000-01-01"})
    assert [g["key"] for g in costs["groups"]] == ["red-1"]


def test_a_caller_tagged_with_two_teams_reads_both(handler: Any) -> None:
    api = LocalQueryApi(handler, caller_arn=_role("two", {"imagebatch:team": "red blue"}))
    assert sorted(b["batch_id"] for b in api.get("/batches")["batches"]) == ["blue-1", "red-1"]


def test_an_untagged_caller_reads_nothing(handler: Any) -> None:
    api = LocalQueryApi(handler, caller_arn=_role("nobody", {}))
    assert api.get("/batches")["batches"] == []
    assert api.call("GET", "/batches/red-1")[0] == 404
    assert api.get("/costs", {"group_by": "batch", "since": "2000-01-01"})["groups"] == []


def test_without_tenancy_every_caller_reads_every_batch(
    handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERY_TENANCY", "false")
    from imagebatch.settings import QuerySettings  # the handler's settings, read per cold start

    assert QuerySettings.from_env().query_tenancy is False
    api = LocalQueryApi(
        load_query_handler(REPO / "functions" / "query"), caller_arn=_role("any", {})
    )
    assert len(api.get("/batches")["batches"]) == 3
