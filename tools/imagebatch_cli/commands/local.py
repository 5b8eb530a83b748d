"""`imagebatch local run` and `imagebatch local catalog`: the pipeline on this machine.

Both start the local AWS (imagebatch_local/cloud/session.py: moto, the template's
resources, the real handlers and state machine; docs/local-aws.md) for the length of one
command, run a batch through it, copy its images and reports under --out and keep its ledger there
(imagebatch_local/cloud/ledger_export.py), because the local AWS is gone when the command ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, ValidationError

from imagebatch.models.money import format_usd
from imagebatch_cli.commands._args import (
    ParametersOption,
    SampleOption,
    TemplateOption,
    default_region,
    manifest_path,
    resolved_template,
)
from imagebatch_cli.exit_codes import ExitCode, exit_code_for_status, fail
from imagebatch_cli.views.console import console, emit_json, err_console
from imagebatch_cli.views.progress import image_progress
from imagebatch_cli.views.report import print_cost

if TYPE_CHECKING:
    from imagebatch_local.cloud.catalog_local import LocalCatalogRun
    from imagebatch_local.cloud.session import LocalAws, LocalOptions
    from imagebatch_local.fakes.bedrock_server import BedrockStats
    from imagebatch_local.lambda_logs import LambdaLog

    from imagebatch.models.batch_record import BatchRecord

# `local run`'s options, one alias each so the command's signature stays readable.
ManifestsArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        exists=True,
        dir_okay=False,
        readable=True,
        show_default=False,
        help="Manifests (JSON Lines or CSV), run in order in one local AWS; or --sample NAME.",
    ),
]
RunOutOption = Annotated[Path, typer.Option(help="Where the batch's images are copied.")]
RunModelDirOption = Annotated[
    Path | None,
    typer.Option(help="A local diffusers model folder; default: the tiny offline model."),
]
RenderSizeOption = Annotated[int, typer.Option(help="Short side of local images, px.")]
StepsOption = Annotated[int, typer.Option(help="Denoising steps of the local model.")]
ThrottleRateOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share of Bedrock calls throttled (0 to 1).")
]
FilterRateOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share refused by content filter (0 to 1).")
]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Also show the Lambdas' own log lines (always in lambda.log)."
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the batch's summary as JSON (the query API's shape)."),
]
ChunkSizeOption = Annotated[int | None, typer.Option(help="Images per chunk.")]
FaultSeedOption = Annotated[int, typer.Option(help="Seed of the injected faults.")]
RetryBaseOption = Annotated[
    int | None,
    typer.Option(help="First backoff ceiling after a throttle (deployed default 500)."),
]
RetryCapOption = Annotated[
    int | None, typer.Option(help="Largest backoff ceiling (deployed default 20000).")
]
BackendOption = Annotated[
    str,
    typer.Option(
        help="'sagemaker' also deploys the SageMaker backend and serves it locally "
        "(batches whose manifest says backend sagemaker run there)."
    ),
]
ShapeBucketsOption = Annotated[
    str, typer.Option(help="SageMaker sizes served, e.g. 64x64,128x128; empty: any.")
]
MaxBatchOption = Annotated[int, typer.Option(help="SageMaker images per pipeline call.")]
RendererOption = Annotated[
    Literal["tiny", "null"],
    typer.Option(
        help="'tiny': the tiny diffusers model (or --model-dir); 'null': a flat "
        "seed-coloured PNG of the asked size at once, no torch (benchmarks)."
    ),
]
ChaosOption = Annotated[
    str | None,
    typer.Option(
        help="SEED[:RATE]: inject AWS's faults (throttles, 5xx, connection errors, lost "
        "replies, Lambda timeouts, duplicate deliveries, Map child failures) at RATE of the "
        "functions' calls (default 0.05), the same for the same seed; listed in chaos.json.",
        show_default=False,
    ),
]
AsInsiderOption = Annotated[
    bool,
    typer.Option(
        "--as-insider",
        help="Upload the manifests as an insider: a principal of the account that is not the "
        "stack's, allowed s3:PutObject/GetObject, sns:Publish, sqs:SendMessage, "
        "events:PutEvents and execute-api:Invoke on '*' (README, Security model).",
    ),
]
RegionOption = Annotated[
    str | None,
    typer.Option(
        help="The AWS region the local AWS plays (default: samconfig.toml's deploy region, "
        "else AWS_REGION, else us-west-2).",
        show_default=False,
    ),
]


#: The faults the chaos mode injected during a batch, in its run folder.
CHAOS_FILE = "chaos.json"

# `local catalog --json`: the run's counts, as the catalog function reports them.
COUNTS = ("products", "changed", "unchanged", "errors")


class LocalRunOptions(BaseModel):
    """`imagebatch local run`'s options as one checked value (no defaults: the command's
    signature holds them, once)."""

    model_config = ConfigDict(frozen=True)

    out: Path
    model_dir: Path | None
    template: Path
    render_size: int
    steps: int
    throttle_rate: float
    filter_rate: float
    chunk_size: int | None
    # Template parameters as `sam deploy --parameter-overrides` takes them (ChunkSize wins).
    parameter_overrides: dict[str, str] = {}
    fault_seed: int
    retry_base_ms: int | None
    retry_cap_ms: int | None
    backend: Literal["bedrock", "sagemaker"]
    shape_buckets: str
    max_batch: int
    renderer: Literal["tiny", "null"] = "tiny"
    region: str = "us-west-2"
    chaos: str | None = None
    as_insider: bool = False

    def function_environment(self) -> dict[str, str]:
        """The backoff settings asked for, over the functions' own (a quick rehearsal)."""
        settings = (("RETRY_BASE_MS", self.retry_base_ms), ("RETRY_CAP_MS", self.retry_cap_ms))
        return {name: str(value) for name, value in settings if value is not None}

    def local_options(self) -> LocalOptions:
        """The local AWS's settings for this run."""
        from imagebatch_local.cloud.chaos import ChaosSpec
        from imagebatch_local.cloud.session import LocalOptions

        return LocalOptions(
            template=self.template,
            model_dir=self.model_dir,
            render_short_side=self.render_size,
            render_steps=self.steps,
            throttle_rate=self.throttle_rate,
            content_filter_rate=self.filter_rate,
            fault_seed=self.fault_seed,
            parameter_overrides={
                **self.parameter_overrides,
                **({"ChunkSize": str(self.chunk_size)} if self.chunk_size else {}),
            },
            function_environment=self.function_environment(),
            backend=self.backend,
            shape_buckets=self.shape_buckets,
            max_batch=self.max_batch,
            renderer=self.renderer,
            region=self.region,
            chaos=ChaosSpec.parse(self.chaos) if self.chaos else None,
        )


@dataclass(frozen=True)
class LocalRun:
    """What one `local run` left behind, for the report printed after the local AWS stops."""

    batch_id: str
    summary: BatchRecord
    images: list[dict[str, Any]]
    bedrock: BedrockStats
    # The endpoint observer's records: this batch's share of cold start and idle (OVERHEAD#),
    # and the windows of instance time it closed (billed, inference, unattributed idle).
    overhead: list[dict[str, Any]]
    windows: list[dict[str, Any]]
    target: Path
    files: list[Path]
    log: Path
    region: str


def local_run(  # noqa: PLR0917 - typer turns each parameter into an option
    manifest: ManifestsArgument = None,
    sample: SampleOption = None,
    out: RunOutOption = Path("out"),
    model_dir: RunModelDirOption = None,
    template: TemplateOption = None,
    render_size: RenderSizeOption = 64,
    steps: StepsOption = 1,
    throttle_rate: ThrottleRateOption = 0.0,
    filter_rate: FilterRateOption = 0.0,
    chunk_size: ChunkSizeOption = None,
    parameter_overrides: ParametersOption = None,
    fault_seed: FaultSeedOption = 0,
    retry_base_ms: RetryBaseOption = None,
    retry_cap_ms: RetryCapOption = None,
    backend: BackendOption = "bedrock",
    shape_buckets: ShapeBucketsOption = "",
    max_batch: MaxBatchOption = 4,
    renderer: RendererOption = "tiny",
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
    region: RegionOption = None,
    chaos: ChaosOption = None,
    as_insider: AsInsiderOption = False,
) -> None:
    """Upload MANIFEST to a local S3 and run the whole pipeline on this machine; several
    MANIFESTs run in order in one local AWS, each with its summary. Exit 0: every image made;
    3 PARTIAL; 4 FAILED; 5 REJECTED (the worst batch's)."""
    manifests = list(manifest or []) or [manifest_path(None, sample)]
    if manifest and sample is not None:
        manifest_path(manifests[0], sample)  # refuses both, in the words it always has
    try:
        options = LocalRunOptions(
            out=out,
            model_dir=model_dir,
            template=resolved_template(template),
            render_size=render_size,
            steps=steps,
            throttle_rate=throttle_rate,
            filter_rate=filter_rate,
            chunk_size=chunk_size,
            parameter_overrides=_parameters(parameter_overrides),
            fault_seed=fault_seed,
            retry_base_ms=retry_base_ms,
            retry_cap_ms=retry_cap_ms,
            backend=backend,
            shape_buckets=shape_buckets,
            max_batch=max_batch,
            renderer=renderer,
            region=region or default_region(),
            chaos=chaos,
            as_insider=as_insider,
        )
    except ValidationError as exc:
        raise typer.BadParameter("--backend is bedrock or sagemaker") from exc
    if chaos is not None:
        _check_chaos(chaos)
    runs = _run_batches(manifests, options, verbose=verbose)
    if as_json:
        _print_json(runs)
    else:
        for run in runs:
            _print_run(run, options.out)
    # the worst batch decides (exit codes grow with how badly a batch ended)
    raise typer.Exit(max(exit_code_for_status(str(run.summary.status)) for run in runs))


def _check_chaos(text: str) -> None:
    """--chaos as SEED[:RATE]; anything else a usage error (the local AWS loads only here)."""
    from imagebatch_local.cloud.chaos import ChaosSpec, ChaosSpecError

    try:
        ChaosSpec.parse(text)
    except ChaosSpecError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _parameters(texts: list[str] | None) -> dict[str, str]:
    """--parameter-overrides as a dict; one that is not Key=Value is a usage error."""
    from imagebatch_cli.template_preview import StackParametersError, parse_parameter_overrides

    try:
        return parse_parameter_overrides(texts or [])
    except StackParametersError as exc:
        fail(exc, code=ExitCode.USAGE)


def _run_batches(
    manifests: list[Path], options: LocalRunOptions, *, verbose: bool = False
) -> list[LocalRun]:
    """Start the local AWS, run each manifest through it in order (each batch finished
    before the next is uploaded, as a team uploads a fixed manifest: the later ones reuse the
    earlier ones' images, docs/reuse.md), and keep what each report needs; the Lambdas'
    output goes to <out>/<batch-id>/lambda.log (on stderr too with --verbose)."""
    from imagebatch_local.cloud.session import LocalRunError, local_aws
    from imagebatch_local.lambda_logs import lambda_output

    runs: list[LocalRun] = []
    try:
        with lambda_output(verbose=verbose) as log, local_aws(options.local_options()) as aws:
            for manifest in manifests:
                runs.append(_run_one(aws, manifest, options, log))
    except LocalRunError as exc:
        fail(exc)
    return runs


def _run_one(aws: LocalAws, manifest: Path, options: LocalRunOptions, log: LambdaLog) -> LocalRun:
    """One manifest through the running local AWS; its images and ledger under --out."""
    from imagebatch_local.fakes.bedrock_server import BedrockStats
    from imagebatch_local.lambda_logs import LAMBDA_LOG
    from imagebatch_local.ledger_export import ledger_export_path, write_ledger_export
    from imagebatch_local.run_folder import fresh_batch_folder, relink_review_page

    from imagebatch.aws.endpoint_usage import EndpointUsageStore

    stats_before = aws.bedrock.stats.to_dict()
    chaos_since = len(aws.chaos.injected) if aws.chaos else 0
    batch_id = aws.upload_manifest(manifest, as_insider=options.as_insider)
    by = " as the insider" if options.as_insider else ""
    err_console.print(
        f"uploaded [bold]{manifest}[/bold]{by} -> s3://{aws.bucket}/manifests/"
        f"{manifest.name}  batch [bold]{batch_id}[/bold]"
    )
    with image_progress(err_console) as progress:
        summary = aws.wait_for_batch(batch_id, progress)
    # The contact sheet is the execution's last step, after the status is final.
    aws.wait_for_execution(batch_id)
    images = list(aws.ledger().image_records(batch_id))
    # this batch's calls only: the local Bedrock counts for the whole session
    bedrock_stats = BedrockStats(
        **{name: n - stats_before[name] for name, n in aws.bedrock.stats.to_dict().items()}
    )
    # The local endpoint scales in once the batch is done: its cold start and idle
    # time are charged to the batches of the session (docs/sagemaker.md).
    overhead: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    if aws.sagemaker is not None:
        aws.sagemaker.scale_in()
        usage = EndpointUsageStore(aws.client("dynamodb"), aws.table)
        overhead = usage.overhead_records(batch_id)
        windows = usage.windows(aws.sagemaker.config.endpoint_name)
    # A batch id that ran before starts from a clean folder: no earlier run's images.
    target = fresh_batch_folder(options.out, batch_id)
    files = aws.download_outputs(batch_id, summary.output_prefix or "outputs/", target)
    relink_review_page(target)
    others = _ledger_records(aws, batch_id)
    # The summary as the partition stands now: the contact sheet, after finalize, holds
    # budget and charges its own commit; the export must hold both or it does not add up.
    settled = aws.ledger().get_batch(batch_id) or summary
    write_ledger_export(ledger_export_path(options.out, batch_id), settled, others)
    write_local_evidence(target, windows=windows, paid_images=bedrock_stats.images_returned)
    if aws.chaos is not None:
        report = aws.chaos.report(chaos_since)
        (target / CHAOS_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
        err_console.print(
            f"chaos seed {report['seed']} rate {report['rate']}: injected "
            + (", ".join(f"{k} {n}" for k, n in report["by_kind"].items()) or "nothing")
            + f" (each, with its place: {target / CHAOS_FILE})",
            markup=False,
            highlight=False,
        )
    log_path = log.save(target / LAMBDA_LOG)
    return LocalRun(
        batch_id,
        summary,
        images,
        bedrock_stats,
        overhead,
        windows,
        target,
        files,
        log_path,
        options.region,
    )


def write_local_evidence(target: Path, *, windows: list[dict[str, Any]], paid_images: int) -> None:
    """What `local check` needs besides the ledger export and the images: the endpoint's
    windows, and the images the local Bedrock made during the batch (the session's count;
    batches run one after another, so it is this batch's)."""
    from imagebatch_cli.commands.check import EVIDENCE_FILE

    body = {"windows": windows, "paid_images": paid_images}
    (target / EVIDENCE_FILE).write_text(json.dumps(body, default=str), encoding="utf-8")


def _ledger_records(aws: LocalAws, batch_id: str) -> list[dict[str, Any]]:
    """The batch's ledger partition but its summary (exported beside it)."""
    return [r for r in aws.ledger().partition(batch_id) if r["sk"] != "SUMMARY"]


def _print_run(run: LocalRun, out: Path) -> None:
    from imagebatch_local.ledger_export import LEDGER_EXPORT

    print_cost(console, run.summary, run.images)
    for record in run.overhead:
        console.print(
            f"endpoint cold start {format_usd(int(record['cold_start_micro_usd']), grouped=False)}"
            f" + idle {format_usd(int(record['idle_micro_usd']), grouped=False)} charged to "
            f"{run.batch_id} "
            f"(window from {record['window_start']}; beside the image costs above)"
        )
    for window in run.windows:
        console.print(
            f"endpoint window {window['start']} .. {window['end']}: "
            f"{float(window['instance_seconds']):.3f} instance-s = "
            f"{format_usd(int(window['billed_micro_usd']), grouped=False)}, of which inference "
            f"{format_usd(int(window['inference_micro_usd']), grouped=False)}, unattributed "
            f"idle {format_usd(int(window['unattributed_micro_usd']), grouped=False)}"
        )
    stats = run.bedrock
    console.print(
        f"local Bedrock: {stats.invocations} call(s), {stats.throttled} "
        f"throttled, {stats.filtered} content-filtered, "
        f"{stats.images_returned} image(s) returned"
    )
    if run.summary.images_failed:
        console.print(f"failed images: imagebatch redrive {run.batch_id} --out {out}")
    console.print(
        f"{len(run.files)} image(s) in [bold]{run.target}/[/bold]; review page "
        f"{run.target}/reports/index.html; ledger export {run.target / LEDGER_EXPORT}; "
        f"Lambda logs {run.log}",
        soft_wrap=True,
    )


def _print_json(runs: list[LocalRun]) -> None:
    """`local run --json`: {"batch": the query API's batch summary, "images_dir", "review_page",
    "lambda_log"}; with several manifests {"runs": [one such object per manifest, in order]}."""
    shown = [_run_json(run) for run in runs]
    emit_json(shown[0] if len(shown) == 1 else {"runs": shown})


def _run_json(run: LocalRun) -> dict[str, Any]:
    from imagebatch.api.responses import batch_summary
    from imagebatch.costs.prices import load_aws_prices

    shaped = batch_summary(run.summary, load_aws_prices().region(run.region))
    return {
        "batch": shaped.model_dump(mode="json"),
        "images_dir": str(run.target),
        "review_page": str(run.target / "reports" / "index.html"),
        "lambda_log": str(run.log),
    }


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
    template: TemplateOption = None,
    model_dir: Annotated[Path | None, typer.Option(help="A local diffusers model folder.")] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the run as JSON (counts, the batch's summary, paths)."),
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Fire the nightly catalog schedule once: only changed product variants are generated.
    Exit 0: every changed variant made, or nothing changed; 1 products in error (the rest
    ran); 3 PARTIAL; 4 FAILED; 5 REJECTED."""
    from imagebatch.catalog.products import CatalogConfig
    from imagebatch.errors import CatalogError

    try:
        name = CatalogConfig.parse(config.read_bytes(), str(config)).name
    except CatalogError as exc:
        fail(exc)
    state_dir = state or out / "catalogs" / name
    when = (at or datetime.now(UTC)).replace(tzinfo=(at.tzinfo if at and at.tzinfo else UTC))
    run, log = _run_catalog(
        catalog, config, out, state_dir, when, resolved_template(template), model_dir, verbose
    )
    if as_json:
        _print_catalog_json(run, out, state_dir, log)
    else:
        _print_catalog(run, name, out, state_dir)
        console.print(f"Lambda logs {log}", soft_wrap=True)
    raise typer.Exit(catalog_exit_code(run))


def catalog_exit_code(run: LocalCatalogRun) -> ExitCode:
    """The batch's status when it did not make everything; else 1 when products were in error
    (the rest ran: errors.jsonl says which), else 0 (nothing changed is not an error)."""
    if run.summary is not None:
        code = exit_code_for_status(str(run.summary.status))
        if code != ExitCode.OK:
            return code
    return ExitCode.ERROR if run.result.get("errors") else ExitCode.OK


def _run_catalog(  # noqa: PLR0917 - the command's options, passed on
    catalog: Path,
    config: Path,
    out: Path,
    state_dir: Path,
    when: datetime,
    template: Path,
    model_dir: Path | None,
    verbose: bool,
) -> tuple[LocalCatalogRun, Path]:
    """The catalog run, and its Lambdas' log (<state>/lambda.log; on stderr too if verbose)."""
    from imagebatch_local.cloud.catalog_local import run_local_catalog
    from imagebatch_local.cloud.session import LocalOptions, LocalRunError, local_aws
    from imagebatch_local.lambda_logs import LAMBDA_LOG, lambda_output
    from imagebatch_local.ledger_export import ledger_export_path, write_ledger_export
    from imagebatch_local.run_folder import relink_review_page

    try:
        with (
            lambda_output(verbose=verbose) as log,
            local_aws(LocalOptions(template=template, model_dir=model_dir)) as aws,
            image_progress(err_console) as progress,
        ):
            run = run_local_catalog(
                aws,
                products=catalog,
                config_path=config,
                state_dir=state_dir,
                out=out,
                at=when,
                progress=progress,
            )
            log_path = log.save(state_dir / LAMBDA_LOG)
    except LocalRunError as exc:
        fail(exc)
    if run.batch_id is not None and run.summary is not None:
        write_ledger_export(ledger_export_path(out, run.batch_id), run.summary, run.ledger_records)
        relink_review_page(out / run.batch_id)
    return run, log_path


def _print_catalog(run: LocalCatalogRun, name: str, out: Path, state_dir: Path) -> None:
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
        print_cost(console, run.summary, run.images)
        console.print(
            f"{len(run.files)} image(s) in [bold]{target}/[/bold]; contact sheet "
            f"{target}/reports/contact-sheet.png and {target}/reports/index.html"
        )
    console.print(f"latest image per product variant: [bold]{state_dir / 'latest'}/[/bold]")


def _print_catalog_json(run: LocalCatalogRun, out: Path, state_dir: Path, log: Path) -> None:
    """`local catalog --json`: {catalog, run, products, changed, unchanged, errors,
    errors_file, batch: BatchSummary or null, images_dir, review_page, latest_dir,
    lambda_log}."""
    from imagebatch.api.responses import batch_summary
    from imagebatch.costs.prices import load_aws_prices

    result = run.result
    batch = None
    if run.batch_id is not None and run.summary is not None:
        batch = batch_summary(run.summary, load_aws_prices().region(run.region))
    target = out / run.batch_id if run.batch_id is not None else None
    emit_json(
        {
            "catalog": run.catalog,
            "run": result["run"],
            **{key: int(result.get(key) or 0) for key in COUNTS},
            "errors_file": str(state_dir / "errors.jsonl") if result.get("errors") else None,
            "batch": batch.model_dump(mode="json") if batch is not None else None,
            "images_dir": str(target) if target is not None else None,
            "review_page": str(target / "reports" / "index.html") if target is not None else None,
            "latest_dir": str(state_dir / "latest"),
            "lambda_log": str(log),
        }
    )
