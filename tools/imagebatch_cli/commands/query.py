"""`imagebatch cost`, `batches` and `costs`: what was spent, from the ledger or the query API.

With `--api` (or IMAGEBATCH_API) they ask a deployed stack's query API; without it the same
query handler answers over the ledgers `imagebatch local run` exported under `--out`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from imagebatch_cli.views.console import console, fail
from imagebatch_cli.views.report import batches_table, categories_table, costs_table, print_cost

ApiOption = Annotated[
    str | None,
    typer.Option(
        envvar="IMAGEBATCH_API",
        help="Query API URL of a deployed stack (stack output QueryApiUrl); requests are "
        "SigV4-signed with your AWS credentials. Default: the ledgers `local run` exported.",
    ),
]
OutOption = Annotated[Path, typer.Option(help="Where `local run` exported ledgers.")]


def _get(api: str | None, out: Path, path: str, query: Mapping[str, str] | None = None) -> Any:
    """One GET on the query API; an error the API answers ends the command (exit 1)."""
    from imagebatch_cli.project import ProjectFilesNotFound
    from imagebatch_cli.query_client import QueryApiError, query_api

    try:
        with query_api(api, out) as client:
            return client.get(path, query)
    except (QueryApiError, ProjectFilesNotFound) as exc:
        fail(exc)


def batches(
    api: ApiOption = None,
    out: OutOption = Path("out"),
    since: Annotated[str | None, typer.Option(help="7d, 24h or an ISO date")] = None,
    tag: Annotated[str | None, typer.Option(help="key:value")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 25,
) -> None:
    """List batches, newest first, with what each spent."""
    from imagebatch_cli.query_client import parse_since

    query = {"limit": str(limit)}
    if since:
        query["since"] = str(parse_since(since))
    if tag:
        query["tag"] = tag
    page = _get(api, out, "/batches", query)
    console.print(batches_table(page["batches"]))
    if page.get("next_token"):
        console.print("(more: narrow with --since or --tag, or raise --limit)")


def costs(
    api: ApiOption = None,
    out: OutOption = Path("out"),
    group_by: Annotated[str, typer.Option(help="model, backend, batch or tag:<key>")] = "model",
    since: Annotated[str, typer.Option(help="7d, 24h or an ISO date")] = "7d",
    until: Annotated[str | None, typer.Option(help="ISO date; default now")] = None,
) -> None:
    """What was spent over a time range, grouped by model, backend, batch or a tag."""
    from imagebatch_cli.query_client import parse_since

    query = {"group_by": group_by, "since": str(parse_since(since))}
    if until:
        query["until"] = until
    console.print(costs_table(_get(api, out, "/costs", query)))


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
        console.print(categories_table(_get(api, out, f"/batches/{batch_id}")))
        return
    if table:
        summary, images = _from_table(table, batch_id)
    else:
        summary, images = _from_export(out, batch_id)
    print_cost(console, summary, images)


def _from_table(table: str, batch_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from imagebatch.aws.clients import dynamodb_client
    from imagebatch.aws.ledger import Ledger

    ledger = Ledger(dynamodb_client(), table)
    summary = ledger.get_batch(batch_id)
    if summary is None:
        fail(f"no batch {batch_id} in {table}")
    return summary, list(ledger.image_records(batch_id))


def _from_export(out: Path, batch_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from imagebatch_cli.local.cloud.ledger_export import ledger_export_path, read_ledger_export

    export = ledger_export_path(out, batch_id)
    if not export.exists():
        fail(f"no local ledger at {export}; pass --table for AWS")
    return read_ledger_export(export)
