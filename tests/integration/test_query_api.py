"""The query API: the real handler (functions/query/app.py) with API Gateway HTTP API events,
a moto ledger table from template.yaml, the committed OpenAPI document, and schemathesis."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aws_lambda_powertools.utilities.typing import LambdaContext
from hypothesis import HealthCheck, settings
from imagebatch_local.cloud.http_api import (
    LocalQueryApi,
    QueryApiWsgi,
    http_api_event,
    load_query_handler,
)
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method

from imagebatch.api.openapi import OPENAPI_FILE, openapi_text
from imagebatch.api.routes import ApiDependencies, app, resolve
from imagebatch.aws.clients import dynamodb_client as cached_dynamodb_client
from imagebatch.aws.clients import reset_clients
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.ledger_queries import LedgerQueries
from imagebatch.costs.prices import load_aws_prices
from imagebatch.models.records import FailureClass, ImageOutcome

REPO = Path(__file__).resolve().parents[2]
SD35 = "stability.sd3-5-large-v1:0"
CORE = "stability.stable-image-core-v1:1"


def _outcome(image_id: str, model: str, *, ok: bool = True) -> ImageOutcome:
    return ImageOutcome(
        image_id=image_id,
        item_id=image_id.rsplit("-", 1)[0],
        chunk_id="00000",
        status="SUCCEEDED" if ok else "FAILED",
        model=model,
        backend="bedrock",
        seed=1,
        prompt_sha256="0" * 64,
        cost_micro_usd=80_000 if ok else 0,
        failure_class=None if ok else FailureClass.CONTENT_FILTERED,
    )


@pytest.fixture
def api(
    monkeypatch: pytest.MonkeyPatch, dynamodb_client: Any, ledger_table: str
) -> Iterator[LocalQueryApi]:
    """Three batches (two tagged team=a), 40 images in the first; the handler reads them."""
    monkeypatch.setenv("LEDGER_TABLE", ledger_table)
    monkeypatch.setenv("DATA_BUCKET", "unused-bucket")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    ledger = Ledger(dynamodb_client, ledger_table)
    for n, (batch_id, tags) in enumerate(
        [("first", {"team": "a"}), ("second", {"team": "b"}), ("third", {"team": "a"})]
    ):
        ledger.create_batch(
            batch_id,
            {
                "status": "RUNNING",
                "images_total": 40,
                "tags": tags,
                "created_at": f"2026-11-2{n}T10:00:00.000+00:00",
            },
        )
    ledger.commit_images(
        "first",
        [_outcome(f"img-{i:02d}-1", SD35, ok=i % 10 != 0) for i in range(30)]
        + [_outcome(f"core-{i:02d}-1", CORE) for i in range(10)],
        tags={"team": "a"},
    )
    ledger.commit_images("third", [_outcome("x-1", SD35)], tags={"team": "a"})
    reset_clients()
    yield LocalQueryApi(load_query_handler(REPO / "functions" / "query"))
    reset_clients()


def _count_calls() -> Counter[str]:
    calls: Counter[str] = Counter()
    cached_dynamodb_client().meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.update([model.name])
    )
    return calls


def test_committed_openapi_document_is_current() -> None:
    # GIVEN the published document / WHEN generated from the code / THEN identical
    committed = (REPO / "schemas" / OPENAPI_FILE).read_text(encoding="utf-8")
    assert committed == openapi_text(), (
        "regenerate: .venv/bin/python -c 'from pathlib import Path; "
        "from imagebatch.api.openapi import "
        'openapi_text; Path("schemas/openapi.json").write_text(openapi_text())\''
    )


def test_batches_newest_first_paginated_and_filtered_by_tag(api: LocalQueryApi) -> None:
    # WHEN batches are listed two at a time
    calls = _count_calls()
    page = api.get("/batches", {"limit": "2"})
    rest = api.get("/batches", {"limit": "2", "next_token": page["next_token"]})

    # THEN newest first across pages, from the GSI (a Query, never a Scan)
    ids = [b["batch_id"] for b in page["batches"] + rest["batches"]]
    assert ids == ["third", "second", "first"]
    assert set(calls) == {"Query"}

    # AND a tag and a time window narrow the list
    tagged = api.get("/batches", {"tag": "team:a"})
    assert [b["batch_id"] for b in tagged["batches"]] == ["third", "first"]
    window = api.get("/batches", {"since": "2026-11-21", "until": "2026-11-21T23:59:59"})
    assert [b["batch_id"] for b in window["batches"]] == ["second"]


def test_batch_summary_is_one_getitem_with_cost_categories(api: LocalQueryApi) -> None:
    # WHEN a 40-image batch's summary is read
    calls = _count_calls()
    summary = api.get("/batches/first")

    # THEN it takes exactly one GetItem and carries categories and per-image figures
    assert calls == Counter({"GetItem": 1})
    assert summary["images_succeeded"] == 37 and summary["images_failed"] == 3
    assert summary["costs"]["inference"] == 37 * 80_000
    assert summary["costs"]["total"] >= summary["costs"]["inference"]
    assert summary["cost_per_image"]["inference"] == 80_000
    assert summary["usage"]["ddb_write_units"] > 0
    status, body = api.call("GET", "/batches/missing")
    assert status == 404 and "missing" in body


def test_items_paginate_and_filter_by_failure_class(api: LocalQueryApi) -> None:
    # WHEN the failed items are asked for, and all items page by page
    failed = api.get("/batches/first/items", {"failure_class": "content_filtered"})
    seen, token = [], None
    while True:
        query = {"limit": "15", **({"next_token": token} if token else {})}
        page = api.get("/batches/first/items", query)
        seen += [item["image_id"] for item in page["items"]]
        token = page["next_token"]
        if not token:
            break

    # THEN the filter finds exactly the refused images and pages cover all 40 once
    assert sorted(i["image_id"] for i in failed["items"]) == ["img-00-1", "img-10-1", "img-20-1"]
    assert len(seen) == len(set(seen)) == 40
    assert api.call("GET", "/batches/first/items", {"next_token": "bm90LW91cnM="})[0] == 400


def test_costs_grouped_by_model_backend_and_tag_without_a_scan(api: LocalQueryApi) -> None:
    # WHEN costs since a week ago are grouped three ways
    calls = _count_calls()
    by_model = api.get("/costs", {"group_by": "model"})
    by_tag = api.get("/costs", {"group_by": "tag:team"})
    by_backend = api.get("/costs", {"group_by": "backend"})

    # THEN each grouping sums the day rollups, read by Query only
    assert set(calls) == {"Query"}
    models = {g["key"]: g for g in by_model["groups"]}
    assert models[SD35]["images"] == 28 and models[CORE]["images"] == 10
    assert {g["key"]: g["images"] for g in by_tag["groups"]} == {"a": 38}
    assert by_backend["groups"][0]["key"] == "bedrock"
    assert by_model["total_spent_micro_usd"] == by_backend["total_spent_micro_usd"]
    assert api.call("GET", "/costs", {"group_by": "colour"})[0] == 422


def test_dependencies_serve_only_the_request_they_came_with(
    api: LocalQueryApi, dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN one request answered with the dependencies it was resolved with
    dependencies = ApiDependencies(
        queries=LedgerQueries(dynamodb_client, ledger_table),
        prices=load_aws_prices().region("us-east-1"),
    )
    context = LambdaContext()
    answered = resolve(http_api_event("GET", "/batches/first"), context, dependencies)
    assert answered["statusCode"] == 200

    # WHEN the next request reaches the routes without any / THEN it fails, never reusing them
    with pytest.raises(RuntimeError, match="without resolve"):
        app.resolve(http_api_event("GET", "/batches/first"), context)


# The handler's contract: the published document less its SigV4 security requirement, which
# API Gateway's IAM authorizer enforces before the handler runs (template.yaml QueryApi).
DOCUMENT = {k: v for k, v in json.loads(openapi_text()).items() if k != "security"}
schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_openapi_document(case: Any, api: LocalQueryApi) -> None:
    # every generated request gets a response the document allows, never a server error
    # Checks that do not apply to the handler alone: a random next_token is schema-valid
    # but not one the API handed out (its 400 is right), and a method no route declares
    # never reaches the handler (API Gateway answers 404 for an unmatched route).
    case.call_and_validate(
        app=QueryApiWsgi(api, DOCUMENT),
        excluded_checks=[positive_data_acceptance, unsupported_method],
    )
