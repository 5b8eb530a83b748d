"""Ingest for sagemaker batches: shape buckets checked per line, refused when not deployed."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from imagebatch.backends.routing import Deployment
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.sagemaker_seconds import estimate_micro_usd
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkFile
from imagebatch.models.sagemaker_contract import parse_buckets
from imagebatch.planning.plan import plan_batch
from imagebatch.planning.verdict import rejection_reason


def manifest(*items: dict[str, Any]) -> io.BytesIO:
    header = {"batch": {"backend": "sagemaker", "model": "sd21", "on_invalid": "skip"}}
    lines = [json.dumps(header), *(json.dumps(item) for item in items)]
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def deployed(buckets: str) -> Deployment:
    return Deployment(
        endpoint_name="ep",
        price=load_aws_prices().region("us-east-1").instance("ml.inf2.xlarge"),
        model_id="sd21",
        buckets=parse_buckets(buckets),
    )


def test_sizes_outside_the_buckets_are_line_errors_naming_them(tmp_path: Path) -> None:
    plan = plan_batch(
        manifest(
            {"id": "ok", "prompt": "a mug", "width": 512, "height": 512},
            {"id": "big", "prompt": "a cup", "width": 1024, "height": 1024},
        ),
        "m.jsonl",
        batch_id="b",
        catalogue=load_catalogue(),
        chunk_size=10,
        spool=tmp_path,
        deployment=deployed("512x512,768x768"),
    )
    assert plan.images_total == 1
    assert plan.invalid_lines == 1
    assert plan.errors_path is not None
    error = json.loads(plan.errors_path.read_text().splitlines()[0])
    assert error["line"] == 3
    assert error["item_id"] == "big"
    assert error["field"] == "width"
    assert "512x512, 768x768" in error["reason"]
    chunk = ChunkFile.model_validate_json(plan.chunk_body(0))
    assert chunk.backend == "sagemaker"


def test_sagemaker_batches_are_refused_only_where_not_deployed(tmp_path: Path) -> None:
    def plan(deployment: Deployment | None, spool: Path) -> Any:
        spool.mkdir()
        return plan_batch(
            manifest({"id": "ok", "prompt": "a mug", "width": 512, "height": 512}),
            "m.jsonl",
            batch_id="b",
            catalogue=load_catalogue(),
            chunk_size=10,
            spool=spool,
            deployment=deployment,
        )

    refused = rejection_reason(plan(None, tmp_path / "none"))
    assert refused is not None
    assert "not deployed" in refused
    deployed_plan = plan(deployed("512x512"), tmp_path / "deployed")
    assert rejection_reason(deployed_plan, sagemaker_deployed=True) is None


def test_sagemaker_estimate_uses_instance_seconds_and_budgets_refuse_it(tmp_path: Path) -> None:
    # GIVEN 10 SD-1.5-sized images and an inf2 price: 2.09 s x $0.99/h each (data files)
    price = load_aws_prices().region("us-east-1").instance("ml.inf2.xlarge")
    per_image = estimate_micro_usd(512, 512, 50, price)
    assert per_image == 575  # 2.09 s x 275 u$/s
    header = {"batch": {"backend": "sagemaker", "model": "sd21", "max_cost_usd": 0.005}}
    item = {"id": "a", "prompt": "a mug", "width": 512, "height": 512, "steps": 50, "count": 10}
    stream = io.BytesIO(f"{json.dumps(header)}\n{json.dumps(item)}\n".encode())
    # WHEN planned
    plan = plan_batch(
        stream,
        "m.jsonl",
        batch_id="b",
        catalogue=load_catalogue(),
        chunk_size=10,
        spool=tmp_path,
        deployment=deployed("512x512"),
    )
    # THEN the estimate is 10 x 574.75 u$, rounded up once, and a $0.005 cap refuses the batch
    # before it runs
    assert plan.estimate_inference_micro_usd == 5748
    reason = rejection_reason(plan, sagemaker_deployed=True)
    assert reason is not None
    assert "max_cost_usd" in reason


def test_validate_cli_names_the_buckets_like_ingest(tmp_path: Path) -> None:
    from imagebatch_cli.app import app
    from typer.testing import CliRunner

    path = tmp_path / "m.jsonl"
    path.write_text(
        manifest(
            {"id": "ok", "prompt": "a mug", "width": 512, "height": 512},
            {"id": "big", "prompt": "a cup", "width": 1024, "height": 1024},
        )
        .getvalue()
        .decode()
    )
    # the stack's endpoint serves the manifest's model (SageMakerModelId) at 512x512 only
    serves = ["--parameter-overrides", "SageMakerModelId=sd21"]
    result = CliRunner().invoke(app, ["validate", str(path), "--shape-buckets", "512x512", *serves])
    assert result.exit_code == 1
    output = "".join(result.output.split())  # rich wraps long lines anywhere
    # one line per invalid manifest line: file:line: field: reason (id X)
    assert "m.jsonl:3:width(idbig)" in output
    assert "itserves512x512" in output
    # AND on a stack without the endpoint, ingest would refuse the sagemaker batch (exit 5)
    assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 5
