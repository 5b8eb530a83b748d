"""The imagebatch command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import validate_manifest_file
from imagebatch.manifest.schema import FieldError
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import FailureClass
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
    from imagebatch.manifest.reader import ManifestReader, format_for_key
    from imagebatch.manifest.schema import ValidItem
    from imagebatch.models.sagemaker_contract import bucket_error, parse_buckets

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
    from imagebatch.costs.estimate import Shape
    from imagebatch.costs.prices import load_aws_prices
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
    fault_seed: Annotated[int, typer.Option(help="Seed of the injected faults.")] = 0,
    retry_base_ms: Annotated[
        int | None,
        typer.Option(help="First backoff ceiling after a throttle (deployed default 500)."),
    ] = None,
    retry_cap_ms: Annotated[
        int | None, typer.Option(help="Largest backoff ceiling (deployed default 20000).")
    ] = None,
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
    function_env = {
        name: str(value)
        for name, value in (("RETRY_BASE_MS", retry_base_ms), ("RETRY_CAP_MS", retry_cap_ms))
        if value is not None
    }
    options = LocalOptions(
        template=template,
        model_dir=model_dir,
        render_short_side=render_size,
        render_steps=steps,
        throttle_rate=throttle_rate,
        content_filter_rate=filter_rate,
        fault_seed=fault_seed,
        parameter_overrides=overrides,
        function_environment=function_env,
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
            # The contact sheet is the execution's last step, after the status is final.
            aws.wait_for_execution(batch_id)
            images = list(aws.ledger().image_records(batch_id))
            bedrock_stats = aws.bedrock.stats
            # The local endpoint scales in once the batch is done: its cold start and idle
            # time are charged to the batches of the session (docs/sagemaker.md).
            overhead: list[dict[str, Any]] = []
            windows: list[dict[str, Any]] = []
            if aws.sagemaker is not None:
                aws.sagemaker.scale_in()
                usage = EndpointUsageStore(aws.client("dynamodb"), aws.table)
                overhead = usage.overhead_records(batch_id)
                windows = usage.windows(aws.sagemaker.config.endpoint_name)
            target = out / batch_id
            files = aws.download_outputs(batch_id, summary.get("output_prefix", "outputs/"), target)
            others = [r for r in aws.ledger().partition(batch_id) if r["sk"] != "SUMMARY"]
            _export_ledger(target / LEDGER_EXPORT, summary, others)
    except LocalRunError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    print_cost(console, summary, images)
    for record in overhead:
        console.print(
            f"endpoint cold start ${int(record['cold_start_micro_usd']) / 1e6:.6f} + idle "
            f"${int(record['idle_micro_usd']) / 1e6:.6f} charged to {batch_id} "
            f"(window from {record['window_start']})"
        )
    for window in windows:
        console.print(
            f"endpoint window {window['start']} .. {window['end']}: "
            f"{float(window['instance_seconds']):.3f} instance-s = "
            f"${int(window['billed_micro_usd']) / 1e6:.6f}, of which inference "
            f"${int(window['inference_micro_usd']) / 1e6:.6f}, unattributed idle "
            f"${int(window['unattributed_micro_usd']) / 1e6:.6f}"
        )
    console.print(
        f"local Bedrock: {bedrock_stats.invocations} call(s), {bedrock_stats.throttled} "
        f"throttled, {bedrock_stats.filtered} content-filtered, "
        f"{bedrock_stats.images_returned} image(s) returned"
    )
    if summary.get("images_failed"):
        console.print(f"failed images: imagebatch redrive {batch_id} --out {out}")
    console.print(
        f"{len(files)} image(s) in [bold]{target}/[/bold]; reports in "
        f"{target}/reports/; ledger export {target / LEDGER_EXPORT}"
    )
    if summary["status"] in {"REJECTED", "FAILED"}:
        raise typer.Exit(1)


@local_app.command("catalog")
def local_catalog(  # noqa: PLR0917 - typer turns each parameter into an option
    catalog: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="Products: CSV or JSON Lines.")
    ],
    config: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Catalog config.")],
    out: Annotated[Path, typer.Option(help="Batch images and reports go here.")] = Path("out"),
    state: Annotated[
        Path | None,
        typer.Option(help="Catalog state kept between runs; default out/catalogs/<name>/."),
    ] = None,
    at: Annotated[
        datetime | None, typer.Option(help="Scheduled time of the run (default: now, UTC).")
    ] = None,
    template: Annotated[Path, typer.Option(exists=True)] = Path("template.yaml"),
    model_dir: Annotated[Path | None, typer.Option(help="A local diffusers model folder.")] = None,
) -> None:
    """Fire the nightly catalog schedule once: only changed product variants are generated."""
    from imagebatch.catalog.products import CatalogConfig
    from imagebatch.errors import CatalogError
    from imagebatch_cli.local.catalog_local import run_local_catalog
    from imagebatch_cli.local.pipeline import LocalOptions, LocalRunError, local_aws

    try:
        name = CatalogConfig.parse(config.read_bytes(), str(config)).name
    except CatalogError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    state_dir = state or out / "catalogs" / name
    when = (at or datetime.now(UTC)).replace(tzinfo=(at.tzinfo if at and at.tzinfo else UTC))
    try:
        with (
            local_aws(LocalOptions(template=template, model_dir=model_dir)) as aws,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress,
        ):
            task = progress.add_task("images", total=None)
            run = run_local_catalog(
                aws,
                products=catalog,
                config_path=config,
                state_dir=state_dir,
                out=out,
                at=when,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except LocalRunError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    result = run.result
    console.print(
        f"catalog [bold]{name}[/bold] run {result['run']}: {result['products']} products, "
        f"{result['changed']} variant(s) changed, {result['unchanged']} unchanged, "
        f"{result['errors']} product error(s)"
        + (f" (see {state_dir / 'errors.jsonl'})" if result["errors"] else "")
    )
    if run.batch_id is None or run.summary is None:
        console.print("nothing changed: no batch, nothing charged")
    else:
        target = out / run.batch_id
        _export_ledger(target / LEDGER_EXPORT, run.summary, run.ledger_records)
        print_cost(console, run.summary, run.images)
        console.print(
            f"{len(run.files)} image(s) in [bold]{target}/[/bold]; contact sheet "
            f"{target}/reports/contact-sheet.png and {target}/reports/index.html"
        )
    console.print(f"latest image per product variant: [bold]{state_dir / 'latest'}/[/bold]")


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
        from imagebatch.aws.clients import dynamodb_client
        from imagebatch.aws.ledger import Ledger

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


@app.command()
def models(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Also ask Bedrock (GetFoundationModel, your AWS credentials) for each "
            "model's lifecycle and compare it with the catalogue.",
        ),
    ] = False,
    region: Annotated[str | None, typer.Option(help="Region for --live.")] = None,
) -> None:
    """List the Bedrock model catalogue: families, lifecycle, prices by tier, quotas."""
    from imagebatch_cli.models import catalogue_table, live_lifecycles

    catalogue = load_catalogue()
    live_by_model = None
    if live:
        import boto3
        from botocore.exceptions import BotoCoreError

        try:
            client = boto3.client("bedrock", region_name=region)
            live_by_model = {f.model_id: f for f in live_lifecycles(client, catalogue)}
        except BotoCoreError as exc:
            err_console.print(f"[red]cannot ask Bedrock: {exc}[/red]")
            raise typer.Exit(1) from exc
    console.print(catalogue_table(catalogue, datetime.now(UTC).date(), live_by_model))
    for spec in catalogue.models:
        console.print(f"  {spec.model_id}: sizes {spec.describe_sizes()}", soft_wrap=True)


@app.command()
def redrive(  # noqa: PLR0917 - typer turns each parameter into an option
    batch_id: str,
    out: Annotated[Path, typer.Option(help="Where `local run` exported the batch.")] = Path("out"),
    bucket: Annotated[
        str | None,
        typer.Option(help="Read the report from this data bucket instead (AWS credentials)."),
    ] = None,
    failure_class: Annotated[
        list[FailureClass] | None,
        typer.Option("--class", help="Only images that failed with this class (repeatable)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Manifest to write; default redrive-<batch-id>.jsonl.")
    ] = None,
    upload: Annotated[
        bool,
        typer.Option(help="Upload it under manifests/ of --bucket, which starts the redrive."),
    ] = False,
) -> None:
    """Write a manifest of exactly a batch's failed images; uploading it runs only those."""
    from imagebatch_cli.redrive import (
        RedriveError,
        build_redrive,
        read_local_reports,
        read_s3_reports,
    )

    if upload and not bucket:
        err_console.print("[red]--upload needs --bucket[/red]")
        raise typer.Exit(2)
    try:
        if bucket:
            from imagebatch.aws.clients import s3_client

            redrive_lines, failed_lines = read_s3_reports(s3_client(), bucket, batch_id)
        else:
            redrive_lines, failed_lines = read_local_reports(out, batch_id)
        if not redrive_lines:
            console.print(f"batch {batch_id} has no failed images: nothing to redrive")
            return
        manifest = build_redrive(
            redrive_lines, failed_lines, set(failure_class) if failure_class else None
        )
    except RedriveError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if manifest.items == 0:
        console.print(f"no failed image of batch {batch_id} has the classes asked for")
        return
    target = manifest.write(output or Path(f"redrive-{batch_id}.jsonl"))
    by_class = ", ".join(f"{n} {c}" for c, n in sorted(manifest.classes.items()))
    console.print(f"{manifest.items} failed image(s) ({by_class}) -> [bold]{target}[/bold]")
    if upload and bucket:
        from imagebatch.aws.clients import s3_client

        key = f"manifests/{target.name}"
        s3_client().upload_file(str(target), bucket, key)
        console.print(f"uploaded to s3://{bucket}/{key}: the redrive batch has started")
    elif not bucket:
        console.print(f"run it: imagebatch local run {target}")


if __name__ == "__main__":
    app()
