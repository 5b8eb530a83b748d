"""The imagebatch command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from imagebatch.catalogue import load_catalogue
from imagebatch.manifest import ManifestError, validate_manifest_file
from imagebatch_cli.report import batches_table, categories_table, costs_table, print_cost

app = typer.Typer(help="Batch image generation on AWS, priced per image.", no_args_is_help=True)
local_app = typer.Typer(help="Run the pipeline on this machine: no AWS account needed.")
app.add_typer(local_app, name="local")
console = Console()
err_console = Console(stderr=True)

LEDGER_EXPORT = "ledger.jsonl"


@app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
) -> None:
    """Validate a manifest offline, exactly as ingest will; exit 1 if any line is invalid."""
    try:
        settings, valid, errors = validate_manifest_file(manifest, load_catalogue())
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


@app.command()
def estimate(  # noqa: PLR0917 - typer turns each parameter into an option
    manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    chart: Annotated[
        Path | None, typer.Option(help="Write a PNG of cost against number of images.")
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Minutes the batch may take; auto picks within it.")
    ] = None,
    sagemaker_instance: Annotated[
        list[str] | None,
        typer.Option(help="SageMaker instance types to price (repeat); default inf2 and g4dn."),
    ] = None,
    region: Annotated[str, typer.Option(help="Prices of this region.")] = "us-east-1",
    chunk_size: Annotated[int, typer.Option(help="Images per chunk.")] = 50,
) -> None:
    """Price MANIFEST on every backend that can make it: total, per image, wall time."""
    from imagebatch.estimate import Shape
    from imagebatch.pricing import load_aws_prices
    from imagebatch_cli.estimate_cmd import estimate_manifest, estimate_table, write_chart

    instances = sagemaker_instance or ["ml.inf2.xlarge", "ml.g4dn.xlarge"]
    try:
        result = estimate_manifest(
            manifest,
            catalogue=load_catalogue(),
            prices=load_aws_prices().region(region),
            shape=Shape(chunk_size=chunk_size),
            instance_types=instances,
            deadline_s=deadline * 60 if deadline is not None else None,
        )
    except (ManifestError, KeyError) as exc:
        err_console.print(f"[red]{manifest}: {exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(estimate_table(result))
    if result.invalid_lines:
        err_console.print(f"{result.invalid_lines} invalid line(s) left out: see `validate`")
    if result.chosen is None:
        err_console.print("[red]no backend meets the deadline[/red]")
    if chart is not None:
        points = write_chart(result, chart)
        console.print(
            f"chart: {chart}; break-even points: "
            + (", ".join(f"{a} = {b} at {n:,.0f} images" for a, b, n in points) or "none")
        )
    if result.chosen is None:
        raise typer.Exit(1)


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
) -> None:
    """Upload MANIFEST to a local S3 and run the whole pipeline on this machine."""
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
            target = out / batch_id
            files = aws.download_outputs(batch_id, summary.get("output_prefix", "outputs/"), target)
            others = [r for r in aws.ledger().partition(batch_id) if r["sk"] != "SUMMARY"]
            _export_ledger(target / LEDGER_EXPORT, summary, others)
    except LocalRunError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    print_cost(console, summary, images)
    console.print(
        f"{len(files)} image(s) in [bold]{target}/[/bold]; reports in "
        f"{target}/reports/; ledger export {target / LEDGER_EXPORT}"
    )
    if summary["status"] in {"REJECTED", "FAILED"}:
        raise typer.Exit(1)


def _export_ledger(path: Path, summary: dict[str, Any], others: list[dict[str, Any]]) -> None:
    """The batch's whole ledger partition, summary first (`batches`/`costs` read it back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in [summary, *others]:
            handle.write(json.dumps(record, default=str) + "\n")


ApiOption = Annotated[
    str | None,
    typer.Option(
        envvar="IMAGEBATCH_API",
        help="Query API URL of a deployed stack (stack output QueryApiUrl); requests are "
        "SigV4-signed with your AWS credentials. Default: the ledgers `local run` exported.",
    ),
]
OutOption = Annotated[Path, typer.Option(help="Where `local run` exported ledgers.")]


@contextmanager
def _query_api(api: str | None, out: Path) -> Iterator[Any]:
    from imagebatch_cli.api_client import SigV4Api, local_api

    if api:
        yield SigV4Api(api)
        return
    with local_api(out, Path("template.yaml")) as local:
        yield local


@app.command()
def batches(
    api: ApiOption = None,
    out: OutOption = Path("out"),
    since: Annotated[str | None, typer.Option(help="7d, 24h or an ISO date")] = None,
    tag: Annotated[str | None, typer.Option(help="key:value")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 25,
) -> None:
    """List batches, newest first, with what each spent."""
    from imagebatch_cli.api_client import parse_since
    from imagebatch_cli.local.http_api import QueryApiError

    query = {"limit": str(limit)}
    if since:
        query["since"] = str(parse_since(since))
    if tag:
        query["tag"] = tag
    try:
        with _query_api(api, out) as client:
            page = client.get("/batches", query)
    except QueryApiError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(batches_table(page["batches"]))
    if page.get("next_token"):
        console.print("(more: narrow with --since or --tag, or raise --limit)")


@app.command()
def costs(
    api: ApiOption = None,
    out: OutOption = Path("out"),
    group_by: Annotated[str, typer.Option(help="model, backend, batch or tag:<key>")] = "model",
    since: Annotated[str, typer.Option(help="7d, 24h or an ISO date")] = "7d",
    until: Annotated[str | None, typer.Option(help="ISO date; default now")] = None,
) -> None:
    """What was spent over a time range, grouped by model, backend, batch or a tag."""
    from imagebatch_cli.api_client import parse_since
    from imagebatch_cli.local.http_api import QueryApiError

    query = {"group_by": group_by, "since": str(parse_since(since))}
    if until:
        query["until"] = until
    try:
        with _query_api(api, out) as client:
            report = client.get("/costs", query)
    except QueryApiError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(costs_table(report))


@app.command()
def cost(
    batch_id: str,
    table: Annotated[
        str | None,
        typer.Option(help="Ledger table of a deployed stack (uses your AWS credentials)."),
    ] = None,
    api: ApiOption = None,
    out: OutOption = Path("out"),
) -> None:
    """Print what a batch cost and why, by category, from the ledger."""
    if api:
        from imagebatch_cli.local.http_api import QueryApiError

        try:
            with _query_api(api, out) as client:
                summary = client.get(f"/batches/{batch_id}")
        except QueryApiError as exc:
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        console.print(categories_table(summary))
        return
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
        summary = records[0]
        images = [r for r in records[1:] if str(r.get("sk", "IMAGE#")).startswith("IMAGE#")]
    print_cost(console, summary, images)


if __name__ == "__main__":
    app()
