"""Clients for the query API: a deployed stack (SigV4-signed HTTPS) or the local ledger exports.

Both answer the same paths with the same JSON, so the CLI's tables do not care which it is.
What a person types (--since, --until, --tag, --group-by) is checked here before any request,
so a typo is a usage error naming the option, never an HTTP 422.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer
from imagebatch_local.query_api_errors import QueryApiError, api_error_message

if TYPE_CHECKING:
    from imagebatch.aws.session import AwsSession

_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_TIME_FORMS = "7d, 24h, 30m, a date (2026-11-22) or a UTC time (2026-11-22T10:00:00Z)"


def parse_time(value: str, option: str = "--since") -> datetime:
    """'7d', '24h', '30m' (ago) or an ISO date/time -> an aware UTC datetime; anything else
    is a usage error naming the option."""
    match = _RELATIVE.match(value)
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}T.+", value):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        pass
    raise typer.BadParameter(f"{value!r} is not one of {_TIME_FORMS}", param_hint=option)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def time_range(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """--since/--until as the API's ISO timestamps; a range that ends before it starts is a
    usage error (it would silently match nothing)."""
    start = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None
    if start is not None and end is not None and start > end:
        raise typer.BadParameter(
            f"--since {since} is after --until {until}: the range is empty", param_hint="--since"
        )
    return (iso(start) if start else None, iso(end) if end else None)


def parse_since(value: str | None) -> str | None:
    """'7d', '24h', '30m' or an ISO date/time -> an ISO timestamp (UTC)."""
    return iso(parse_time(value)) if value is not None else None


def check_tag(value: str) -> str:
    key, sep, _ = value.partition(":")
    if not sep or not key:
        raise typer.BadParameter(
            f"{value!r} is not key:value (for example project:demo)", param_hint="--tag"
        )
    return value


GROUPS = ("model", "backend", "batch")


def check_group_by(value: str) -> str:
    if value in GROUPS or (value.startswith("tag:") and len(value) > 4 and ":" not in value[4:]):
        return value
    raise typer.BadParameter(
        f"{value!r} is not one of {', '.join(GROUPS)} or tag:<key>", param_hint="--group-by"
    )


class QueryApi(Protocol):
    def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]: ...


class SigV4Api:
    """The deployed HTTP API (AWS_IAM authorization): requests signed with your credentials."""

    def __init__(self, base_url: str, session: AwsSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session

    def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        from imagebatch.aws.session import json_body

        response = self._session.signed_get(f"{self.base_url}{path}", query)
        if response.status != 200:
            raise QueryApiError(api_error_message(path, response.status, response.body))
        loaded: dict[str, Any] = json_body(response)
        return loaded


@contextmanager
def query_api(
    api: str | None,
    out: Path,
    template: Path | None = None,
    session: AwsSession | None = None,
) -> Iterator[QueryApi]:
    """The deployed stack's API when `api` is given, else the same handler over the ledgers
    `imagebatch local run` exported under `out`."""
    if api:
        from imagebatch.aws.session import AwsSession

        yield SigV4Api(api, session or AwsSession())
        return
    from imagebatch_local.cloud.http_api import local_api

    from imagebatch_cli.project import template_path

    with local_api(out, template_path(template)) as local:
        yield local


#: CostGroup's amounts, summed across /costs pages (src/imagebatch/costs/grouping.py).
_GROUP_SUMS = ("images", "inference_micro_usd", "spent_micro_usd", "reuse_saved_micro_usd")
_REPORT_SUMS = ("total_spent_micro_usd", "unattributed_idle_micro_usd")


def get_complete(client: QueryApi, path: str, query: Mapping[str, str] | None) -> dict[str, Any]:
    """One GET, and for /costs every further page its next_token names, summed into one
    report: the API reads a bounded page of day rollups per request."""
    report = client.get(path, query)
    if path != "/costs":
        return report
    while report.get("next_token"):
        page = client.get(path, {**(query or {}), "next_token": str(report["next_token"])})
        report = merge_cost_pages(report, page)
    return report


def merge_cost_pages(first: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """Two /costs pages as one: groups with the same key summed, most spent first (as the
    API orders one page)."""
    groups: dict[str, dict[str, Any]] = {}
    for group in [*first.get("groups", []), *then.get("groups", [])]:
        seen = groups.setdefault(
            group["key"], {**group, **dict.fromkeys(_GROUP_SUMS, 0), "active": {}}
        )
        for name in _GROUP_SUMS:
            seen[name] += int(group.get(name, 0))
        # the unattributed idle's shares shown with the batches active in its windows
        for key, share in (group.get("active") or {}).items():
            seen["active"][key] = seen["active"].get(key, 0) + int(share)
    ordered = sorted(groups.values(), key=lambda group: -int(group["spent_micro_usd"]))
    merged = {**first, "groups": ordered, "next_token": then.get("next_token")}
    for name in _REPORT_SUMS:
        merged[name] = int(first.get(name, 0)) + int(then.get(name, 0))
    return merged
