"""Compile a Stable Diffusion model for Inferentia2 per shape bucket and pack model.tar.gz.

    python -m imagebatch_serving.compile --model stabilityai/stable-diffusion-2-1-base \\
        --buckets 512x512,768x768 --batch-size 4 --work build/neuron --out model.tar.gz

Neuron compiles static shapes: each bucket is one `optimum-cli export neuron` run into its own
folder. The archive holds those folders and buckets.json (batch size, buckets, pipeline kind),
which the Neuron backend reads at start. Its S3 key goes to the template's
SageMakerModelDataKey (in the stack's data bucket, or in SageMakerModelBucket), and the same
buckets to SageMakerShapeBuckets so ingest rejects sizes the endpoint cannot serve.

`imagebatch endpoint compile` runs this module as a SageMaker training job in the Neuron image
(`--work /opt/ml/model --no-pack`: SageMaker packs /opt/ml/model into model.tar.gz itself).
`--instance-type` names the Neuron target: optimum-neuron 0.4.5 asks for it when the machine
has no Neuron device, and a trn1 compile host must still compile for the inf2 endpoint. Runs
where the Neuron SDK is installed (the Neuron image of containers/neuron); the command line
itself is unit-tested anywhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from imagebatch.models.sagemaker_contract import ShapeBucket, parse_buckets
from imagebatch_serving.backends import BUCKETS_FILE

Runner = Callable[[list[str]], None]
PipelineKind = Literal["sd", "sdxl"]
# optimum-cli export neuron's --instance_type choices (optimum-neuron 0.4.5).
NEURON_TARGETS = ("inf2", "trn1", "trn1n", "trn2")


def export_command(
    model: str,
    bucket: ShapeBucket,
    batch_size: int,
    output: Path,
    *,
    auto_cast_type: str = "bf16",
    target: str = "inf2",
) -> list[str]:
    """The `optimum-cli export neuron` invocation for one static shape, for `target`'s
    NeuronCores whether or not this machine has a Neuron device."""
    return [
        "optimum-cli",
        "export",
        "neuron",
        "--model",
        model,
        "--batch_size",
        str(batch_size),
        "--height",
        str(bucket.height),
        "--width",
        str(bucket.width),
        "--num_images_per_prompt",
        "1",
        "--auto_cast",
        "matmul",
        "--auto_cast_type",
        auto_cast_type,
        "--instance_type",
        target,
        str(output),
    ]


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True)  # noqa: S603 - argv list, no shell


def compile_buckets(
    model: str,
    buckets: Sequence[ShapeBucket],
    batch_size: int,
    work: Path,
    *,
    pipeline: PipelineKind,
    auto_cast_type: str = "bf16",
    target: str = "inf2",
    runner: Runner = _run,
) -> Path:
    """Export every bucket into work/<WxH>/ and write work/buckets.json; returns work."""
    if not buckets:
        raise ValueError("give at least one shape bucket: Neuron compiles static shapes")
    work.mkdir(parents=True, exist_ok=True)
    for bucket in buckets:
        runner(
            export_command(
                model,
                bucket,
                batch_size,
                work / str(bucket),
                auto_cast_type=auto_cast_type,
                target=target,
            )
        )
    manifest = {
        "model": model,
        "pipeline": pipeline,
        "batch_size": batch_size,
        "buckets": [str(b) for b in buckets],
        "auto_cast_type": auto_cast_type,
        "target": target,
    }
    (work / BUCKETS_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return work


def pack_model(work: Path, archive: Path) -> Path:
    """model.tar.gz with the bucket folders and buckets.json at its root (SageMaker extracts
    it into /opt/ml/model)."""
    manifest = json.loads((work / BUCKETS_FILE).read_text(encoding="utf-8"))
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(work / BUCKETS_FILE, arcname=BUCKETS_FILE)
        for name in manifest["buckets"]:
            folder = work / name
            if not folder.is_dir():
                raise FileNotFoundError(f"bucket {name} was not compiled into {folder}")
            tar.add(folder, arcname=name)
    return archive


def main(argv: Sequence[str] | None = None, runner: Runner = _run) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagebatch_serving.compile")
    parser.add_argument("--model", required=True, help="hub id or local diffusers folder")
    parser.add_argument("--buckets", required=True, help="e.g. 512x512,768x768")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--pipeline", choices=["sd", "sdxl"], default="sd")
    parser.add_argument("--auto-cast-type", default="bf16", choices=["bf16", "fp16", "tf32"])
    parser.add_argument(
        "--instance-type",
        choices=NEURON_TARGETS,
        default="inf2",
        help="the Neuron instance family the endpoint runs on (optimum's --instance_type)",
    )
    parser.add_argument("--work", type=Path, default=Path("build/neuron"))
    parser.add_argument("--out", type=Path, default=Path("build/model.tar.gz"))
    parser.add_argument(
        "--no-pack",
        action="store_true",
        help="leave the compiled folders in --work unpacked (a SageMaker training job packs "
        "/opt/ml/model into model.tar.gz itself)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    try:
        buckets = parse_buckets(args.buckets)
    except ValueError as exc:
        parser.error(str(exc))
    work = compile_buckets(
        args.model,
        buckets,
        args.batch_size,
        args.work,
        pipeline=args.pipeline,
        auto_cast_type=args.auto_cast_type,
        target=args.instance_type,
        runner=runner,
    )
    if not args.no_pack:
        pack_model(work, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
