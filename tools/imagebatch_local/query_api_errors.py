"""How a refusal of the query API reads, whichever way the API was reached.

The CLI's signed client (imagebatch_cli.query_client) and the local API here
(cloud/http_api.py) answer the same paths with the same JSON, so they fail the same way too.
The error lives in this lower package so both can raise it and neither imports the other.
"""

from __future__ import annotations

import json


class QueryApiError(Exception):
    pass


def api_error_message(path: str, status: int, body: str) -> str:
    """A refusal from the query API in one line: the parameter and what it must be."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"GET {path}: HTTP {status}: {body[:200]}"
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        parts = []
        for detail in parsed["detail"]:
            where = " ".join(str(part) for part in detail.get("loc", []))
            parts.append(f"{where}: {detail.get('msg', detail.get('type', 'invalid'))}")
        return f"the query API refused GET {path}: " + "; ".join(parts)
    if isinstance(parsed, dict) and "message" in parsed:
        return f"GET {path}: {parsed['message']} (HTTP {status})"
    return f"GET {path}: HTTP {status}: {body[:200]}"
