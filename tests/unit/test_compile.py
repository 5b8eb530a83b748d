"""The Neuron compile entry point: the optimum-cli command line and model.tar.gz packing."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from imagebatch_serving.compile import compile_buckets, export_command, main, pack_model

from imagebatch.models.sagemaker_contract import ShapeBucket


def test_export_command_is_the_static_shape_optimum_cli_call() -> None:
    command = export_command(
        "stabilityai/stable-diffusion-2-1-base",
        ShapeBucket(width=768, height=512),
        4,
        Path("out/768x512"),
    )
    assert command == [
        "optimum-cli",
        "export",
        "neuron",
        "--model",
        "stabilityai/stable-diffusion-2-1-base",
        "--batch_size",
        "4",
        "--height",
        "512",
        "--width",
        "768",
        "--num_images_per_prompt",
        "1",
        "--auto_cast",
        "matmul",
        "--auto_cast_type",
        "bf16",
        "out/768x512",
    ]


def _fake_export(command: list[str]) -> None:
    # What optimum-cli leaves behind: a pipeline folder with model_index.json.
    output = Path(command[-1])
    output.mkdir(parents=True)
    (output / "model_index.json").write_text("{}")


def test_compile_runs_one_export_per_bucket_and_packs_them(tmp_path: Path) -> None:
    # GIVEN two buckets
    calls: list[list[str]] = []

    def runner(command: list[str]) -> None:
        calls.append(command)
        _fake_export(command)

    # WHEN compiled and packed through the command line
    archive = tmp_path / "model.tar.gz"
    code = main(
        [
            "--model",
            "sd21",
            "--buckets",
            "512x512,768x768",
            "--batch-size",
            "2",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(archive),
        ],
        runner=runner,
    )
    # THEN one export per bucket, and an archive SageMaker extracts into /opt/ml/model
    assert code == 0
    assert [c[c.index("--height") + 1] for c in calls] == ["512", "768"]
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("buckets.json").read())  # type: ignore[union-attr]
    assert {"buckets.json", "512x512/model_index.json", "768x768/model_index.json"} <= names
    assert manifest["batch_size"] == 2
    assert manifest["buckets"] == ["512x512", "768x768"]
    assert manifest["pipeline"] == "sd"


def test_pack_refuses_a_bucket_that_was_not_compiled(tmp_path: Path) -> None:
    bucket = ShapeBucket(width=512, height=512)
    work = compile_buckets("sd21", [bucket], 1, tmp_path, pipeline="sd", runner=lambda c: None)
    with pytest.raises(FileNotFoundError, match="512x512"):
        pack_model(work, tmp_path / "model.tar.gz")


def test_bad_bucket_text_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--model", "m", "--buckets", "big", "--work", str(tmp_path)], runner=_fake_export)
