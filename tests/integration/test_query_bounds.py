"""Bounded reads per query API request: a rare tag filter or a long /costs range reads at most
a fixed number of ledger items per call and hands back a next_token, instead of paging the
whole index inside one request (on moto's DynamoDB, which reports ScannedCount as AWS does)."""

from __future__ import annotations

from typing import Any

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.ledger_queries import LedgerQueries


def _batches(client: Any, table: str, n: int, rare_every: int) -> None:
    ledger = Ledger(client, table)
    for i in range(n):
        tags = {"team": "rare" if i % rare_every == 0 else "common"}
        ledger.create_batch(
            f"b-{i:03d}",
            {
                "status": "SUCCEEDED",
                "images_total": 1,
                "tags": tags,
                "created_at": f"2026-12-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
            },
        )


def test_a_rare_tag_filter_reads_at_most_the_bound_per_call(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN 60 batches, one in 20 tagged team=rare, and a bound of 10 items read per call
    _batches(dynamodb_client, ledger_table, 60, rare_every=20)
    queries = LedgerQueries(dynamodb_client, ledger_table, max_scanned=10)

    # WHEN a page of 5 rare batches is asked for
    first = queries.list_batches(
        since="2000", until="9999", tag=("team", "rare"), limit=5, next_token=None
    )

    # THEN the call stops after reading 10 items, with what it found and a token to go on
    assert first.scanned <= 10
    assert first.next_token is not None
    # AND following the tokens finds all three, each call within the bound
    found = [b.batch_id for b in first.items]
    token: str | None = first.next_token
    calls = 1
    while token is not None:
        page = queries.list_batches(
            since="2000", until="9999", tag=("team", "rare"), limit=5, next_token=token
        )
        assert page.scanned <= 10
        found += [b.batch_id for b in page.items]
        token = page.next_token
        calls += 1
    assert sorted(found) == ["b-000", "b-020", "b-040"]
    assert calls >= 6  # 60 items at 10 a call


def test_cost_rollups_are_read_a_bounded_page_at_a_time(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN 25 day rollups
    for day in range(1, 26):
        dynamodb_client.put_item(
            TableName=ledger_table,
            Item={
                "pk": {"S": f"BATCH#b{day}"},
                "sk": {"S": f"DAY#2026-11-{day:02d}"},
                "gsi1pk": {"S": "COSTS"},
                "gsi1sk": {"S": f"2026-11-{day:02d}#b{day}"},
                "spent_micro_usd": {"N": "1"},
            },
        )
    queries = LedgerQueries(dynamodb_client, ledger_table, max_scanned=10)

    # WHEN the range is read a page at a time
    pages = []
    token = None
    while True:
        page = queries.cost_rollup_page("2026-11-01", "2026-11-30", next_token=token)
        pages.append(len(page.items))
        token = page.next_token
        if token is None:
            break

    # THEN no page holds more than the bound, and together they hold every rollup
    assert max(pages) <= 10
    assert sum(pages) == 25


class _Pages:
    """A query API answering /costs in two pages, as a bounded read does."""

    def __init__(self) -> None:
        self.asked: list[dict[str, str]] = []

    def get(self, path: str, query: Any = None) -> dict[str, Any]:
        self.asked.append(dict(query or {}))
        group = {"images": 1, "inference_micro_usd": 5, "reuse_saved_micro_usd": 0}
        if "next_token" not in (query or {}):
            return {
                "groups": [{"key": "a", **group, "spent_micro_usd": 7}],
                "total_spent_micro_usd": 7,
                "unattributed_idle_micro_usd": 0,
                "next_token": "t1",
            }
        return {
            "groups": [
                {"key": "b", **group, "spent_micro_usd": 9},
                {"key": "a", **group, "spent_micro_usd": 3},
            ],
            "total_spent_micro_usd": 12,
            "unattributed_idle_micro_usd": 0,
            "next_token": None,
        }


def test_the_cli_sums_every_costs_page() -> None:
    from imagebatch_cli.query_client import get_complete

    api = _Pages()
    report = get_complete(api, "/costs", {"group_by": "model"})
    assert [q.get("next_token") for q in api.asked] == [None, "t1"]
    assert report["total_spent_micro_usd"] == 19 and report["next_token"] is None
    assert [(g["key"], g["spent_micro_usd"], g["images"]) for g in report["groups"]] == [
        ("a", 10, 2),
        ("b", 9, 1),
    ]
