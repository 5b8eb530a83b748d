"""Fixtures every test tier shares. Only what is pure lives here: moto and the local AWS are
imported by tests/integration/conftest.py (from tests/support/), never by tests/unit."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_log_handler_left_on_a_closed_stream() -> Iterator[None]:
    """Powertools binds its handler to the sys.stdout of the moment its Logger is made; when
    that was a CliRunner's stream (a test that loaded a handler through the CLI), point it
    back at stderr once the stream is closed, so later tests' log lines are not lost in
    "I/O operation on closed file" errors."""
    yield
    for name in ["", *logging.root.manager.loggerDict]:
        for handler in logging.getLogger(name).handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                # not setStream: it flushes the old stream first, which is closed
                handler.acquire()
                try:
                    handler.stream = sys.stderr
                finally:
                    handler.release()
