"""The Neuron compile entry point: the optimum-cli command line and model.tar.gz packing."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from imagebatch_serving.compile import (
    _run,
    compile_buckets,
    export_command,
    main,
    pack_model,
)

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
        "--instance_type",
        "inf2",
        "out/768x512",
    ]


def test_the_neuron_target_is_always_named() -> None:
    # optimum-neuron 0.4.5 refuses to export without --instance_type when the machine has no
    # Neuron device (a CPU box, or a SageMaker job before the runtime sees a device), and a
    # trn1 compile host must still compile for the inf2 endpoint.
    command = export_command("m", ShapeBucket(width=64, height=64), 1, Path("o"), target="trn1")
    assert command[command.index("--instance_type") + 1] == "trn1"
    with pytest.raises(SystemExit):
        main(["--model", "m", "--buckets", "64x64", "--instance-type", "inf1"], runner=_fake_export)


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
    assert manifest["target"] == "inf2"
    assert all(c[c.index("--instance_type") + 1] == "inf2" for c in calls)


def _sagemaker_pack(model_dir: Path, archive: Path) -> None:
    # What a training job does with /opt/ml/model when the container exits 0: its contents,
    # paths relative to the folder, into output/model.tar.gz.
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(model_dir.iterdir()):
            tar.add(child, arcname=child.name)


def _layout(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return set(tar.getnames())


def test_job_mode_leaves_the_same_layout_for_sagemaker_to_pack(tmp_path: Path) -> None:
    # GIVEN the arguments `imagebatch endpoint compile` gives the training job
    model_dir = tmp_path / "opt-ml-model"
    args = ["--model", "sd21", "--buckets", "512x512,768x768", "--batch-size", "2"]
    # WHEN run with --no-pack into the job's model folder, and locally with --out
    code = main([*args, "--work", str(model_dir), "--no-pack"], runner=_fake_export)
    local = tmp_path / "local.tar.gz"
    main([*args, "--work", str(tmp_path / "work"), "--out", str(local)], runner=_fake_export)
    # THEN nothing is packed in the job, and SageMaker's archive of /opt/ml/model is laid out
    # exactly as the local one, buckets.json at the root where the Neuron backend reads it
    assert code == 0
    assert not list(model_dir.glob("*.tar.gz"))
    job = tmp_path / "job.tar.gz"
    _sagemaker_pack(model_dir, job)
    assert _layout(job) == _layout(local)
    with tarfile.open(job) as tar:
        manifest = json.loads(tar.extractfile("buckets.json").read())  # type: ignore[union-attr]
    assert manifest["buckets"] == ["512x512", "768x768"]
    assert manifest["batch_size"] == 2


NEURON_ABSENT = (
    importlib.util.find_spec("optimum") is None
    or importlib.util.find_spec("optimum.neuron") is None
    or shutil.which("optimum-cli") is None
)


@pytest.mark.neuron
@pytest.mark.skipif(
    NEURON_ABSENT,
    reason="needs the Neuron SDK (optimum-neuron[neuronx,diffusers], neuronx-cc): run it in "
    "the containers/neuron image",
)
def test_the_tiny_model_compiles_for_inf2_without_a_neuron_device(tmp_path: Path) -> None:
    # The real optimum-cli on the offline tiny model, at its own size: a CPU host compiling
    # for inf2 must work (the --instance_type fix), and the archive must be servable.
    from imagebatch_local.fakes.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    archive = tmp_path / "model.tar.gz"
    work = str(tmp_path / "w")
    code = main(
        ["--model", str(model), "--buckets", "64x64", "--work", work, "--out", str(archive)],
        runner=_run,
    )
    assert code == 0
    assert {"buckets.json", "64x64/model_index.json"} <= _layout(archive)


def test_pack_refuses_a_bucket_that_was_not_compiled(tmp_path: Path) -> None:
    bucket = ShapeBucket(width=512, height=512)
    work = compile_buckets("sd21", [bucket], 1, tmp_path, pipeline="sd", runner=lambda c: None)
    with pytest.raises(FileNotFoundError, match="512x512"):
        pack_model(work, tmp_path / "model.tar.gz")


def test_bad_bucket_text_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--model", "m", "--buckets", "big", "--work", str(tmp_path)], runner=_fake_export)
