"""The endpoint's wake (a cold start and the idle tail after the batch, data/throughput.json)
is money a batch that finds the endpoint at zero causes: admission counts it against the
cap, `auto` does not pick the endpoint when the cap cannot cover it, and `backend:
sagemaker` is refused with the figure."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from imagebatch.backends.routing import (
    Deployment,
    FlexibleImages,
    choose_for_flexible,
    wake_micro_usd,
)
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.money import MICRO, ceil_micro, format_usd
from imagebatch.models.sagemaker_contract import parse_buckets
from imagebatch.planning.plan import BatchPlan, plan_batch
from imagebatch.planning.verdict import rejection_reason

PRICES = load_aws_prices().region("us-east-1")
CATALOGUE = load_catalogue()
CORE = "stability.stable-image-core-v1:1"


def deployment(*, at_zero: bool = True) -> Deployment:
    return Deployment(
        endpoint_name="ep",
        price=PRICES.instance("ml.inf2.xlarge"),
        model_id="sd21",
        buckets=parse_buckets("512x512,1024x1024"),
        stands_in_for=frozenset((CORE,)),
        at_zero=at_zero,
    )


WAKE = ceil_micro(wake_micro_usd(deployment()))


def _flexible(images: int) -> FlexibleImages:
    group = FlexibleImages()
    for _ in range(images):
        # a $0.04 Stable Image Core image, or 8.4 s on inf2
        group.add(Decimal(40_000), Decimal("8.36"))
    return group


def _plan(stream: io.BytesIO, tmp_path: Path, **kwargs: Any) -> BatchPlan:
    return plan_batch(
        stream,
        "m.jsonl",
        batch_id="b",
        catalogue=CATALOGUE,
        chunk_size=10,
        spool=tmp_path,
        prices=PRICES,
        shape=Shape(chunk_size=10),
        **kwargs,
    )


def _manifest(backend: str, *items: dict[str, Any], **batch: Any) -> io.BytesIO:
    header = {"batch": {"backend": backend, "on_invalid": "skip", **batch}}
    lines = [json.dumps(header), *(json.dumps(i) for i in items)]
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def test_the_wake_is_a_figure_worth_a_cap() -> None:
    assert WAKE > 100_000  # more than $0.10 on ml.inf2.xlarge


def test_auto_does_not_wake_the_endpoint_for_a_cap_that_cannot_cover_the_wake() -> None:
    options: dict[str, Any] = {
        "deployment": deployment(),
        "endpoint_needed": False,
        "prices": PRICES,
        "shape": Shape(),
        "deadline_s": None,
    }
    # 50 images are cheaper on the endpoint, wake included...
    assert choose_for_flexible(_flexible(50), **options).backend == "sagemaker"
    # ...but a cap under the wake cannot pay for it: Bedrock, and the reason says so
    capped = choose_for_flexible(_flexible(50), **options, cap_micro_usd=WAKE - 1)
    assert capped.backend == "bedrock"
    assert format_usd(WAKE, grouped=False) in capped.reason
    # warm, there is no wake to pay
    warm = options | {"deployment": deployment(at_zero=False)}
    assert choose_for_flexible(_flexible(50), **warm, cap_micro_usd=WAKE - 1).backend == (
        "sagemaker"
    )


def test_an_auto_manifest_under_a_small_cap_is_planned_on_bedrock(tmp_path: Path) -> None:
    many = {"id": "m", "prompt": "p", "model": CORE, "width": 1024, "height": 1024, "count": 10}
    items = [{**many, "id": f"m{i}"} for i in range(5)]
    cap = Decimal(WAKE - 1) / MICRO
    plan = _plan(
        _manifest("auto", *items, max_cost_usd=str(cap)), tmp_path, deployment=deployment()
    )
    assert plan.backends == {"bedrock": 50}
    assert plan.endpoint_wake_micro_usd == 0


def test_backend_sagemaker_is_refused_when_the_cap_cannot_cover_the_wake(tmp_path: Path) -> None:
    one = {"id": "a", "prompt": "p", "width": 512, "height": 512}
    cap = Decimal(WAKE - 1) / MICRO
    plan = _plan(
        _manifest("sagemaker", one, max_cost_usd=str(cap)), tmp_path, deployment=deployment()
    )
    assert plan.endpoint_wake_micro_usd == WAKE
    refused = rejection_reason(plan, sagemaker_deployed=True)
    assert refused is not None
    assert "\n" not in refused
    assert f"max_cost_usd ${cap}" in refused
    assert format_usd(WAKE, grouped=False) in refused
    assert "wake" in refused
    # the same batch with the endpoint warm runs
    (tmp_path / "warm").mkdir()
    warm = _plan(
        _manifest("sagemaker", one, max_cost_usd=str(cap)),
        tmp_path / "warm",
        deployment=deployment(at_zero=False),
    )
    assert rejection_reason(warm, sagemaker_deployed=True) is None
