"""The container's logs as JSON: one object per line on stderr, for CloudWatch Logs Insights.

Stdlib only: the serving images do not carry Powertools (containers/*/requirements.txt), and
these lines are read by the same queries as the Lambdas' (level, message, service, exception).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

SERVICE = "imagebatch-serving"

# LogRecord's own attributes; anything else on a record came from `extra=` and is logged.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: timestamp (UTC, ISO 8601), level, logger, message, the
    `extra=` fields, and the exception's type and traceback when there is one."""

    def __init__(self, service: str = SERVICE) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception_name"] = record.exc_info[0].__name__
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: an `extra` value json cannot encode is logged as its text, not lost.
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_json_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger through one JSON handler on the root, gunicorn's worker logger
    included (it has handlers of its own, in gunicorn's plain format)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("gunicorn.error", "gunicorn.access"):
        gunicorn = logging.getLogger(name)
        gunicorn.handlers[:] = []
        gunicorn.propagate = True
