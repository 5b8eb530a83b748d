"""Ingest's estimate covers the ledger writes a tagged batch really makes (issue 19): every
chunk commit updates the summary and a day rollup, both carrying the batch's tags (up to 50
keys of 128 and values of 256 characters, ~19 KB), so a heavily tagged batch writes tens of
units an update rather than the size bounds' few, on Bedrock and on the endpoint alike."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from imagebatch.backends.routing import Deployment
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import rollup_write_units, summary_write_units, tags_bytes
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.sagemaker_contract import parse_buckets
from imagebatch.planning.plan import plan_batch
from imagebatch.planning.stack_options import DeployedOptions
from imagebatch.planning.verdict import estimate_plan

PRICES = load_aws_prices().region("us-east-1")
MAX_TAGS = {f"{i:02d}".ljust(128, "k"): "v" * 256 for i in range(50)}
CHUNK = 5
IMAGES = 20


def _deployment() -> Deployment:
    return Deployment(
        endpoint_name="ep",
        price=PRICES.instance("ml.inf2.xlarge"),
        model_id="sd21",
        buckets=parse_buckets("512x512"),
    )


def _estimated_orchestration(backend: str, tags: dict[str, str], spool: Path) -> int:
    spool.mkdir()
    model = "sd21" if backend == "sagemaker" else "stability.sd3-5-large-v1:0"
    header = {"batch": {"backend": backend, "model": model, "tags": tags}}
    size = {"width": 512, "height": 512} if backend == "sagemaker" else {}
    items = [{"id": f"i{n}", "prompt": "a mug", **size, "count": 10} for n in range(IMAGES // 10)]
    lines = [json.dumps(header), *(json.dumps(item) for item in items)]
    stream = io.BytesIO(("\n".join(lines) + "\n").encode())
    stack = DeployedOptions(
        chunk_size=CHUNK,
        max_concurrency=10,
        prices=PRICES,
        shape=Shape(chunk_size=CHUNK),
        region="us-east-1",
        deployment=_deployment(),
    )
    plan = plan_batch(
        stream,
        "m.jsonl",
        batch_id="b",
        catalogue=load_catalogue(),
        chunk_size=CHUNK,
        spool=spool,
        deployment=stack.deployment,
        prices=PRICES,
        shape=stack.shape,
    )
    assert plan.images_total == IMAGES
    assert {chunk.backend for chunk in plan.chunks} == {backend}
    estimate = estimate_plan(plan, stack, PRICES)
    return estimate.orchestration_micro_usd


@pytest.mark.parametrize("backend", ["bedrock", "sagemaker"])
def test_the_estimate_of_a_tagged_batch_covers_its_tag_sized_writes(
    backend: str, tmp_path: Path
) -> None:
    # GIVEN the same batch untagged and with the most tags a manifest may carry
    plain = _estimated_orchestration(backend, {}, tmp_path / "plain")
    tagged = _estimated_orchestration(backend, MAX_TAGS, tmp_path / "tagged")
    # THEN the tagged estimate is above the untagged one by at least what the tags add to
    # each chunk commit's summary and rollup updates (gsi1 replicas included)
    size = tags_bytes(MAX_TAGS)
    extra_units = (IMAGES // CHUNK) * (
        summary_write_units(size)
        - summary_write_units()
        + rollup_write_units(size)
        - rollup_write_units()
    )
    unit = PRICES.service("dynamodb_write_request_unit").usd * Decimal(1_000_000)
    assert tagged - plain >= int(extra_units * unit), (tagged, plain, extra_units)
