"""The imagebatch command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from imagebatch.catalogue import load_catalogue
from imagebatch.manifest import FieldError, ManifestError, validate_manifest_file
from imagebatch_cli.report import print_cost

app = typer.Typer(help="Batch image generation on AWS, priced per image.", no_args_is_help=True)
local_app = typer.Typer(help="Run the pipeline on this machine: no AWS account needed.")
app.add_typer(local_app, name="local")
console = Console()
err_console = Console(stderr=True)

LEDGER_EXPORT = "ledger.jsonl"


@app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    shape_buckets: Annotated[
        str | None,
        typer.Option(help="The SageMaker endpoint's sizes (e.g. 512x512,768x768), as deployed."),
    ] = None,
) -> None:
    """Validate a manifest offline, exactly as ingest will; exit 1 if any line is invalid."""
    try:
        settings, valid, errors = validate_manifest_file(manifest, load_catalogue())
        if shape_buckets is not None and settings.backend == "sagemaker":
            bucket_errors = _shape_bucket_errors(manifest, shape_buckets)
            valid -= len(bucket_errors)
            errors = sorted([*errors, *bucket_errors], key=lambda error: error.line)
    except ManifestError as exc:
        err_console.print(f"[red]{manifest}: {exc}[/red]")
        raise typer.Exit(1) from exc
    for error in errors:
        item = f" (id {error.item_id})" if error.item_id else ""
        err_console.print(f"{manifest}:{error.line}: {error.field}{item}: {error.reason}")
    lines = len({error.line for error in errors})
    console.print(
        f"{valid} valid item(s), {lines} invalid line(s); backend {settings.backend}, "
        f"on_invalid {settings.on_invalid}"
    )
    if errors:
        raise typer.Exit(1)


def _shape_bucket_errors(manifest: Path, shape_buckets: str) -> list[FieldError]:
    """Sizes the endpoint was not compiled for, as ingest reports them."""
    from imagebatch.manifest import ManifestReader, ValidItem, format_for_key
    from imagebatch.sagemaker import bucket_error, parse_buckets

    buckets = parse_buckets(shape_buckets)
    found = []
    with manifest.open("rb") as stream:
        for entry in ManifestReader(stream, format_for_key(manifest.name), load_catalogue()):
            if not isinstance(entry, ValidItem):
                continue
            reason = bucket_error(entry.item.width, entry.item.height, buckets)
            if reason is not None:
                found.append(
                    FieldError(line=entry.line, field="width", reason=reason, item_id=entry.item.id)
                )
    return found


@local_app.command("run")
def local_run(  # noqa: PLR0917 - typer turns each parameter into an option
    manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    out: Annotated[Path, typer.Option(help="Where the batch's images are copied.")] = Path("out"),
    model_dir: Annotated[
        Path | None,
        typer.Option(help="A local diffusers model folder; default: the tiny offline model."),
    ] = None,
    template: Annotated[Path, typer.Option(exists=True)] = Path("template.yaml"),
    render_size: Annotated[int, typer.Option(help="Short side of local images, px.")] = 64,
    steps: Annotated[int, typer.Option(help="Denoising steps of the local model.")] = 1,
    throttle_rate: Annotated[float, typer.Option(help="Share of Bedrock calls throttled.")] = 0.0,
    filter_rate: Annotated[float, typer.Option(help="Share refused by content filter.")] = 0.0,
    chunk_size: Annotated[int | None, typer.Option(help="Images per chunk.")] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="'sagemaker' also deploys the SageMaker backend and serves it locally "
            "(batches whose manifest says backend sagemaker run there)."
        ),
    ] = "bedrock",
    shape_buckets: Annotated[
        str, typer.Option(help="SageMaker sizes served, e.g. 64x64,128x128; empty: any.")
    ] = "",
    max_batch: Annotated[int, typer.Option(help="SageMaker images per pipeline call.")] = 4,
) -> None:
    """Upload MANIFEST to a local S3 and run the whole pipeline on this machine."""
    if backend not in {"bedrock", "sagemaker"}:
        raise typer.BadParameter("--backend is bedrock or sagemaker")
    from imagebatch_cli.local.pipeline import LocalOptions, LocalRunError, local_aws

    overrides = {"ChunkSize": str(chunk_size)} if chunk_size else {}
    options = LocalOptions(
        template=template,
        model_dir=model_dir,
        render_short_side=render_size,
        render_steps=steps,
        throttle_rate=throttle_rate,
        content_filter_rate=filter_rate,
        parameter_overrides=overrides,
        backend=backend,
        shape_buckets=shape_buckets,
        max_batch=max_batch,
    )
    try:
        with local_aws(options) as aws:
            batch_id = aws.upload_manifest(manifest)
            console.print(
                f"uploaded [bold]{manifest}[/bold] -> s3://{aws.bucket}/manifests/"
                f"{manifest.name}  batch [bold]{batch_id}[/bold]"
            )
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("images", total=None)
                summary = aws.wait_for_batch(
                    batch_id,
                    lambda done, total: progress.update(task, completed=done, total=total),
                )
            images = list(aws.ledger().image_records(batch_id))
            # The local endpoint scales in once the batch is done: its cold start and idle
            # time are charged to the batches of the session (docs/sagemaker.md).
            overhead = aws.sagemaker.scale_in() if aws.sagemaker is not None else {}
            target = out / batch_id
            files = aws.download_outputs(batch_id, summary.get("output_prefix", "outputs/"), target)
            _export_ledger(target / LEDGER_EXPORT, summary, images)
    except LocalRunError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    print_cost(console, summary, images)
    for charged, micro_usd in sorted(overhead.items()):
        console.print(
            f"endpoint cold start + idle charged to {charged}: ${micro_usd / 1e6:.6f} "
            "(beside the image costs above)"
        )
    console.print(
        f"{len(files)} image(s) in [bold]{target}/[/bold]; reports in "
        f"{target}/reports/; ledger export {target / LEDGER_EXPORT}"
    )
    if summary["status"] in {"REJECTED", "FAILED"}:
        raise typer.Exit(1)


def _export_ledger(path: Path, summary: dict[str, Any], images: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in [summary, *images]:
            handle.write(json.dumps(record, default=str) + "\n")


@app.command()
def cost(
    batch_id: str,
    table: Annotated[
        str | None,
        typer.Option(help="Ledger table of a deployed stack (uses your AWS credentials)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where `local run` exported the ledger.")] = Path("out"),
) -> None:
    """Print what a batch cost and why, from the ledger."""
    if table:
        from imagebatch.clients import dynamodb_client
        from imagebatch.ledger import Ledger

        ledger = Ledger(dynamodb_client(), table)
        summary = ledger.get_batch(batch_id)
        if summary is None:
            err_console.print(f"[red]no batch {batch_id} in {table}[/red]")
            raise typer.Exit(1)
        images = list(ledger.image_records(batch_id))
    else:
        export = out / batch_id / LEDGER_EXPORT
        if not export.exists():
            err_console.print(f"[red]no local ledger at {export}; pass --table for AWS[/red]")
            raise typer.Exit(1)
        records = [json.loads(line) for line in export.read_text().splitlines()]
        summary, images = records[0], records[1:]
    print_cost(console, summary, images)


if __name__ == "__main__":
    app()
