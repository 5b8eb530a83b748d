"""`imagebatch cost`, `batches` and `costs`: what was spent, from the ledger or the query API.

With `--api` (or IMAGEBATCH_API) they ask a deployed stack's query API; without it the same
query handler answers over the ledgers `imagebatch local run` exported under `--out`.
`--json` prints the query API's own response body (schemas/openapi.json) and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imagebatch_cli.deployed_stack import StackOption
from imagebatch_cli.exit_codes import fail
from imagebatch_cli.query_client import check_group_by, check_tag, time_range
from imagebatch_cli.views.console import console, emit_json

if TYPE_CHECKING:
    from imagebatch.models.batch_record import BatchRecord

ApiOption = Annotated[
    str | None,
    typer.Option(
        envvar="IMAGEBATCH_API",
        show_default=False,
        help="Query API URL of a deployed stack (stack output QueryApiUrl); requests are "
        "SigV4-signed with your AWS credentials. Default: the ledgers `local run` exported.",
    ),
]
OutOption = Annotated[Path, typer.Option(help="Where `local run` exported ledgers.")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the query API's JSON body instead of a table.")
]
SinceHelp = "7d, 24h, 30m, a date (2026-11-22) or a UTC time (2026-11-22T10:00:00Z)"


def _get(
    where: tuple[str | None, str | None, Path], path: str, query: Mapping[str, str] | None = None
) -> Any:
    """One GET on the query API: the --stack's (its QueryApiUrl output), --api's, or the local
    exports under --out; an error the API answers ends the command (exit 1)."""
    return _get_many(where, [(path, query)])[0]


def _get_many(
    where: tuple[str | None, str | None, Path],
    requests: Sequence[tuple[str, Mapping[str, str] | None]],
) -> list[Any]:
    """Several GETs on one connection to the query API (one local API over the exports)."""
    from imagebatch_local.query_api_errors import QueryApiError

    from imagebatch_cli.deployed_stack import deployed_stack
    from imagebatch_cli.query_client import get_complete, query_api
    from imagebatch_cli.settings import aws_session

    stack, api, out = where
    session = None
    if stack:
        deployed = deployed_stack(stack, use_samconfig=False)
        api, session = deployed.outputs.query_api_url, deployed.session
    elif api:
        session = aws_session()
    try:
        with query_api(api, out, session=session) as client:
            return [get_complete(client, path, query) for path, query in requests]
    except QueryApiError as exc:
        fail(exc)


def batches(  # noqa: PLR0917 - typer turns each parameter into an option
    stack: StackOption = None,
    api: ApiOption = None,
    out: OutOption = Path("out"),
    since: Annotated[str | None, typer.Option(help=SinceHelp, show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help=SinceHelp, show_default=False)] = None,
    tag: Annotated[
        str | None, typer.Option(help="key:value, a batch tag", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 25,
    as_json: JsonOption = False,
) -> None:
    """List batches, newest first, with what each cost."""
    from imagebatch.api.responses import BatchListEntry
    from imagebatch_cli.views.report import batches_table

    start, end = time_range(since, until)
    query = {"limit": str(limit)}
    if start:
        query["since"] = start
    if end:
        query["until"] = end
    if tag:
        query["tag"] = check_tag(tag)
    page = _get((stack, api, out), "/batches", query)
    if as_json:
        emit_json(page)
        return
    console.print(batches_table([BatchListEntry.model_validate(b) for b in page["batches"]]))
    if page.get("next_token"):
        console.print("(more: narrow with --since or --tag, or raise --limit)")


def costs(  # noqa: PLR0917 - typer turns each parameter into an option
    stack: StackOption = None,
    api: ApiOption = None,
    out: OutOption = Path("out"),
    group_by: Annotated[str, typer.Option(help="model, backend, batch or tag:<key>")] = "model",
    since: Annotated[str, typer.Option(help=SinceHelp)] = "7d",
    until: Annotated[
        str | None, typer.Option(help=SinceHelp + "; default now", show_default=False)
    ] = None,
    as_json: JsonOption = False,
    reconcile: Annotated[
        bool,
        typer.Option(
            "--reconcile",
            help="Put the ledger beside Cost Explorer per day and service, each difference "
            "explained (needs ce:GetCostAndUsage; $0.01 a request).",
        ),
    ] = False,
    cost_tag: Annotated[
        str | None,
        typer.Option(
            help="With --reconcile: the cost-allocation tag KEY=VALUE Cost Explorer filters "
            "on. Default: aws:cloudformation:stack-name=<the stack>.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """What was charged over a time range, grouped by model, backend, batch or a tag; with
    --reconcile, beside what Cost Explorer billed."""
    from imagebatch_cli.views.report import costs_table

    if reconcile:
        from imagebatch_cli.commands.reconcile import (
            cost_tag as tag_for,
        )
        from imagebatch_cli.commands.reconcile import (
            day_range,
            print_reconciliation,
            reconcile_costs,
        )

        result = reconcile_costs(
            lambda requests: _get_many((stack, api, out), requests),
            day_range(since, until),
            tag_for(stack, cost_tag),
        )
        print_reconciliation(result, as_json=as_json)
        return
    start, end = time_range(since, until)
    query = {"group_by": check_group_by(group_by), "since": str(start)}
    if end:
        query["until"] = end
    report = _get((stack, api, out), "/costs", query)
    if as_json:
        emit_json(report)
        return
    console.print(costs_table(report))


def cost(  # noqa: PLR0917 - typer turns each parameter into an option
    batch_id: str,
    stack: StackOption = None,
    table: Annotated[
        str | None,
        typer.Option(
            help="Ledger table of a deployed stack (uses your AWS credentials).",
            show_default=False,
        ),
    ] = None,
    api: ApiOption = None,
    out: OutOption = Path("out"),
    as_json: JsonOption = False,
) -> None:
    """Print what a batch cost and why, by category, from the ledger."""
    from imagebatch.api.responses import BatchSummary, batch_summary
    from imagebatch.costs.prices import load_aws_prices
    from imagebatch_cli.views.report import print_categories, print_cost

    if stack or api:
        shaped = _get((stack, api, out), f"/batches/{batch_id}")
        if as_json:
            emit_json(shaped)
        else:
            print_categories(console, BatchSummary.model_validate(shaped))
        return
    region = "us-east-1"
    if table:
        summary, images, region = _from_table(table, batch_id)
    else:
        summary, images = _from_export(out, batch_id)
    if as_json:
        emit_json(batch_summary(summary, load_aws_prices().region(region)))
        return
    print_cost(console, summary, images, region)


def _from_table(table: str, batch_id: str) -> tuple[BatchRecord, list[dict[str, Any]], str]:
    """The batch's summary and image records from a deployed ledger, and its region."""
    from imagebatch.aws.ledger import Ledger
    from imagebatch.aws.session import aws_errors
    from imagebatch_cli.settings import aws_session

    session = aws_session()
    with aws_errors(f"reading table {table}"):
        ledger = Ledger(session.dynamodb(), table)
        summary = ledger.get_batch(batch_id)
        if summary is None:
            fail(f"no batch {batch_id} in {table}")
        return summary, list(ledger.image_records(batch_id)), session.region


def _from_export(out: Path, batch_id: str) -> tuple[BatchRecord, list[dict[str, Any]]]:
    from imagebatch_local.ledger_export import ledger_export_path, read_ledger_export

    export = ledger_export_path(out, batch_id)
    if not export.exists():
        fail(f"no local ledger at {export}; pass --table or --api for a deployed stack")
    return read_ledger_export(export)
