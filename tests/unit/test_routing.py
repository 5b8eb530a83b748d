"""`backend: auto` per item, decided before any work: routing, choice, deadline, ingest plan."""

from __future__ import annotations

import io
import json
import math
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from imagebatch.backends.routing import (
    Deployment,
    FlexibleImages,
    choose_for_flexible,
    route_item,
)
from imagebatch.costs.estimate import Shape
from imagebatch.costs.prices import load_aws_prices
from imagebatch.manifest.schema import FieldError, ManifestItem
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkFile
from imagebatch.models.sagemaker_contract import parse_buckets
from imagebatch.planning.plan import BatchPlan, plan_batch
from imagebatch.planning.verdict import rejection_reason

PRICES = load_aws_prices().region("us-east-1")
CATALOGUE = load_catalogue()
SD35 = "stability.sd3-5-large-v1:0"
CORE = "stability.stable-image-core-v1:1"
TODAY = date(2026, 12, 2)


def deployment(*, at_zero: bool = True, stands_in_for: tuple[str, ...] = (CORE,)) -> Deployment:
    return Deployment(
        endpoint_name="ep",
        price=PRICES.instance("ml.inf2.xlarge"),
        model_id="sd21",
        buckets=parse_buckets("512x512,1024x1024"),
        stands_in_for=frozenset(stands_in_for),
        at_zero=at_zero,
    )


def item(**fields: Any) -> ManifestItem:
    data = {"id": "a", "prompt": "a mug", **fields}
    return ManifestItem.model_validate(data, context={"catalogue": CATALOGUE})


def route(backend: str, **fields: Any) -> Any:
    return route_item(
        item(**fields),
        2,
        backend,  # type: ignore[arg-type]
        catalogue=CATALOGUE,
        deployment=deployment(),
        today=TODAY,
    )


def test_each_item_goes_where_it_can_be_made() -> None:
    # a Bedrock model the endpoint stands in for, at a size both make: either
    assert route("auto", model=CORE, width=1024, height=1024) == "either"
    # the same model at a size outside the endpoint's buckets: Bedrock only
    assert route("auto", model=CORE, width=1344, height=768) == "bedrock"
    # a Bedrock model the endpoint does not stand in for: Bedrock only
    assert route("auto", model=SD35, width=1024, height=1024) == "bedrock"
    # the endpoint's own model: the endpoint only
    assert route("auto", model="sd21", width=512, height=512) == "sagemaker"
    # neither: a line error with both reasons
    errors = route("auto", model="sd21", width=640, height=640)
    assert isinstance(errors, list)
    assert {e.field for e in errors} == {"model", "width"}


def test_under_backend_sagemaker_what_the_endpoint_cannot_make_is_a_line_error() -> None:
    assert route("sagemaker", model="sd21", width=512, height=512) == "sagemaker"
    errors = route("sagemaker", model=SD35, width=1024, height=1024)
    assert isinstance(errors, list)
    [error] = errors
    assert isinstance(error, FieldError)
    assert error.field == "model"
    assert "serves 'sd21'" in error.reason


def _flexible(images: int) -> FlexibleImages:
    group = FlexibleImages()
    for _ in range(images):
        # a $0.04 Stable Image Core image, or 8.4 s on inf2 (2.09 s at 512x512/50 steps, x4)
        group.add(Decimal(40_000), Decimal("8.36"))
    return group


def _choose(images: int, **kwargs: Any) -> str:
    options: dict[str, Any] = {
        "deployment": deployment(),
        "endpoint_needed": False,
        "prices": PRICES,
        "shape": Shape(),
        "deadline_s": None,
    } | kwargs
    return choose_for_flexible(_flexible(images), **options).backend


def test_a_cold_endpoint_pays_only_for_enough_images() -> None:
    # a cold start and an idle tail (1,380 s of inf2, about $0.38) against $0.04 an image
    assert _choose(3) == "bedrock"
    assert _choose(50) == "sagemaker"
    # warm, or needed by other images of the batch anyway: no cold start to pay for
    assert _choose(3, deployment=deployment(at_zero=False)) == "sagemaker"
    assert _choose(3, endpoint_needed=True) == "sagemaker"


def test_the_deadline_rules_out_a_cold_start() -> None:
    # 50 images are cheaper on the endpoint, but its 8-minute cold start misses a 5-minute
    # deadline; Bedrock makes them in time
    assert _choose(50, deadline_s=5 * 60) == "bedrock"
    assert _choose(50, deadline_s=60 * 60) == "sagemaker"


def _manifest(*items: dict[str, Any], **batch: Any) -> io.BytesIO:
    header = {"batch": {"backend": "auto", "on_invalid": "skip", **batch}}
    lines = [json.dumps(header), *(json.dumps(i) for i in items)]
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def _plan(stream: io.BytesIO, tmp_path: Path, **kwargs: Any) -> Any:
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


def _chunks(plan: BatchPlan) -> list[ChunkFile]:
    return [ChunkFile.model_validate_json(plan.chunk_body(i)) for i in range(len(plan.chunks))]


def test_a_mixed_manifest_splits_per_item_and_images_carry_what_made_them(
    tmp_path: Path,
) -> None:
    # GIVEN an auto manifest: SD 3.5 (Bedrock only), the endpoint's model (endpoint only),
    # Stable Image Core the endpoint stands in for (either), and a size nobody makes
    stream = _manifest(
        {"id": "sd35", "prompt": "p", "model": SD35, "count": 2},
        {"id": "own", "prompt": "p", "model": "sd21", "width": 512, "height": 512, "count": 3},
        {"id": "core", "prompt": "p", "model": CORE, "width": 1024, "height": 1024},
        {"id": "odd", "prompt": "p", "model": "sd21", "width": 640, "height": 640},
    )
    # WHEN it is planned against a deployed endpoint
    plan = _plan(stream, tmp_path, deployment=deployment())
    # THEN each chunk holds one backend's images; the endpoint's carry its model
    chunks = _chunks(plan)
    made = {job.image_id: (chunk.backend, job.model) for chunk in chunks for job in chunk.images}
    assert made["sd35-1"] == made["sd35-2"] == ("bedrock", SD35)
    assert made["own-1"] == ("sagemaker", "sd21")
    # the endpoint is needed anyway, so the image either could make goes there too
    assert made["core-1"] == ("sagemaker", "sd21")
    assert "odd-1" not in made
    assert plan.invalid_lines == 1
    assert plan.backends == {"bedrock": 2, "sagemaker": 4}
    assert plan.backend == "mixed"
    assert plan.choice is not None
    backends = [chunk.backend for chunk in plan.chunks]
    assert backends == ["bedrock", "sagemaker"] or backends == ["sagemaker", "bedrock"]
    # AND the estimate prices each image where it runs
    per_second = PRICES.instance("ml.inf2.xlarge").micro_usd_per_second
    # 2.09 s at 512x512/50 steps; these take the default 30; the 1024x1024 one 4x the pixels
    own = Decimal("2.09") * 30 / 50 * per_second
    assert plan.estimate_inference_micro_usd == math.ceil(2 * 80_000 + 3 * own + 4 * own)


def test_without_an_endpoint_auto_is_bedrock_and_sagemaker_is_refused(tmp_path: Path) -> None:
    plan = _plan(_manifest({"id": "a", "prompt": "p", "model": SD35}), tmp_path)
    assert plan.backend == "bedrock"
    stream = _manifest({"id": "a", "prompt": "p", "width": 512, "height": 512})
    stream = io.BytesIO(stream.getvalue().replace(b'"auto"', b'"sagemaker"'))
    refused = rejection_reason(_plan(stream, tmp_path / "s"), sagemaker_deployed=False)
    assert refused is not None
    assert "not deployed" in refused


def test_a_sagemaker_batch_without_a_model_makes_the_endpoints(tmp_path: Path) -> None:
    stream = _manifest({"id": "a", "prompt": "p", "width": 512, "height": 512})
    stream = io.BytesIO(stream.getvalue().replace(b'"auto"', b'"sagemaker"'))
    plan = _plan(stream, tmp_path, deployment=deployment())
    assert plan.invalid_lines == 0
    assert plan.backends == {"sagemaker": 1}
    assert [job.model for job in _chunks(plan)[0].images] == ["sd21"]


@pytest.fixture(autouse=True)
def _spool(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()


# -- the stack as the template deploys it, and the CLI showing what ingest would do ---------

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = (
    "EnableSageMaker=true SageMakerShapeBuckets=64x64,1024x1024 SageMakerModelId=tiny-sd "
    f"SageMakerInstanceType=ml.inf2.xlarge SageMakerBedrockEquivalents={SD35}"
)


def test_the_template_gives_ingest_everything_it_routes_with() -> None:
    from imagebatch_cli.template_preview import ingest_settings, parse_parameter_overrides

    from imagebatch.planning.stack_options import DeployedOptions

    # GIVEN the template deployed with the endpoint
    settings = ingest_settings(
        REPO / "template.yaml", parse_parameter_overrides([ENDPOINT]), "us-east-1"
    )
    # THEN every setting routing reads comes from a parameter (none left at a code default)
    stack = DeployedOptions.from_settings(settings)
    assert stack.deployment is not None
    # named from the stack id (template.yaml SageMakerEndpoint says why)
    assert stack.deployment.endpoint_name.startswith("imagebatch-")
    assert len(stack.deployment.endpoint_name) <= 63
    assert stack.deployment.model_id == "tiny-sd"
    assert stack.deployment.instance_type == "ml.inf2.xlarge"
    assert [str(b) for b in stack.deployment.buckets] == ["64x64", "1024x1024"]
    assert stack.deployment.stands_in_for == {SD35}
    assert stack.deployment.path.max_batch == 4
    # AND without it, no endpoint
    plain = DeployedOptions.from_settings(ingest_settings(REPO / "template.yaml", {}, "us-east-1"))
    assert plain.deployment is None


def _cli(tmp_path: Path, *args: str, items: list[dict[str, Any]], **batch: Any) -> Any:
    from imagebatch_cli.app import app
    from typer.testing import CliRunner

    path = tmp_path / "m.jsonl"
    path.write_text(_manifest(*items, **batch).getvalue().decode())
    return CliRunner().invoke(
        app,
        [args[0], str(path), "--template", str(REPO / "template.yaml"), *args[1:]],
        terminal_width=250,
    )


def _flat(result: Any) -> str:
    """The output without whitespace: rich wraps long lines at the console's width."""
    return "".join(result.output.split())


def test_estimate_shows_what_ingest_would_do_on_the_stack(tmp_path: Path) -> None:
    two = [{"id": "a", "prompt": "p", "model": SD35, "count": 2}]
    # at zero, two images are not worth a cold start: Bedrock, as ingest would choose
    cold = _cli(tmp_path, "estimate", "--parameter-overrides", ENDPOINT, items=two)
    assert cold.exit_code == 0, cold.output
    assert "atzero" in _flat(cold)
    assert "│bedrock│2│1│" in _flat(cold)
    assert "imageseitherbackendcouldmake:bedrock:" in _flat(cold)
    assert "ingestwouldstartbatchbackendbedrock,1chunk(s)" in _flat(cold)
    # warm, the endpoint is cheaper: the same manifest would run there
    warm = _cli(
        tmp_path, "estimate", "--parameter-overrides", ENDPOINT, "--endpoint-warm", items=two
    )
    assert "│sagemaker│2│1│" in _flat(warm)
    assert "ingestwouldstartbatchbackendsagemaker" in _flat(warm)
    # a cap below the estimate: ingest would refuse it, and estimate exits 1
    capped = _cli(
        tmp_path, "estimate", "--parameter-overrides", ENDPOINT, items=two, max_cost_usd="0.01"
    )
    assert capped.exit_code == 1
    assert "ingestwouldrefusethisbatch:estimatedcost" in _flat(capped)
    # no endpoint on the stack: the endpoint's model is nobody's
    own = [{"id": "o", "prompt": "p", "model": "tiny-sd", "width": 64, "height": 64}]
    plain = _cli(tmp_path, "estimate", items=own)
    assert plain.exit_code == 1
    assert "noSageMakerendpoint" in _flat(plain)


def test_validate_routes_like_ingest(tmp_path: Path) -> None:
    items = [
        {"id": "own", "prompt": "p", "model": "tiny-sd", "width": 64, "height": 64},
        {"id": "big", "prompt": "p", "model": CORE, "width": 1344, "height": 768},
    ]
    # under auto, the size outside the buckets goes to Bedrock: both lines valid
    auto = _cli(tmp_path, "validate", "--parameter-overrides", ENDPOINT, items=items)
    assert auto.exit_code == 0, auto.output
    assert "images:1onbedrock,1onsagemaker" in _flat(auto)
    # under sagemaker, a line error naming its line and fields (a model the endpoint does not
    # stand in for, a size outside its buckets)
    only = _cli(
        tmp_path, "validate", "--parameter-overrides", ENDPOINT, items=items, backend="sagemaker"
    )
    assert only.exit_code == 1
    assert "m.jsonl:3:model(idbig)" in _flat(only)
    assert "width:size1344x768" in _flat(only)
    # a parameter the template does not have is refused
    wrong = _cli(tmp_path, "validate", "--parameter-overrides", "NoSuchThing=1", items=items)
    assert wrong.exit_code == 2


def test_the_batch_header_deadline_is_honoured_by_ingest(tmp_path: Path) -> None:
    # 50 images either backend could make, the endpoint at zero: cheaper there, after an
    # 8-minute cold start
    many = {"id": "m", "prompt": "p", "model": CORE, "width": 1024, "height": 1024, "count": 10}
    items = [{**many, "id": f"m{i}"} for i in range(5)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    free = _plan(_manifest(*items), tmp_path / "a", deployment=deployment())
    assert free.backends == {"sagemaker": 50}
    assert free.endpoint_wake_micro_usd > 0
    # a 5-minute deadline in the header rules the cold start out
    rushed = _plan(_manifest(*items, deadline_minutes=5), tmp_path / "b", deployment=deployment())
    assert rushed.backends == {"bedrock": 50}
    assert rushed.endpoint_wake_micro_usd == 0
    assert rushed.settings.deadline_minutes == 5


def test_a_cold_start_paid_by_other_images_still_delays_these() -> None:
    # the endpoint is needed anyway: no cold start to pay, so the endpoint is cheaper...
    assert _choose(3, endpoint_needed=True) == "sagemaker"
    # ...but the images would still wait for it, past a 5-minute deadline
    assert _choose(3, endpoint_needed=True, deadline_s=5 * 60) == "bedrock"
    # warm, they would not
    assert _choose(3, deployment=deployment(at_zero=False), deadline_s=5 * 60) == "sagemaker"
