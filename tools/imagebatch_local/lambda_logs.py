"""Where the local Lambdas' own output goes: a log file, not between the CLI's lines.

The handlers run in this process (cloud/lambda_runtime.py), so what they write on AWS to
CloudWatch - Powertools' JSON log lines, EMF metric blobs, library warnings - would land in
the terminal between the progress bar and the report. While the local AWS runs, the process's
stdout, the Powertools logger's handler and the root logger write to a log instead; with
--verbose the same lines also go to stderr. The CLI's consoles are bound to the real streams
first (views/console.bind_consoles), so its own output is untouched.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LAMBDA_LOG = "lambda.log"


class _Sink:
    """A text stream that writes to the log, and to `echo` too when it is set."""

    def __init__(self, log: IO[str], echo: IO[str] | None) -> None:
        self._log = log
        self._echo = echo
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._log.write(text)
            if self._echo is not None:
                self._echo.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._log.flush()
            if self._echo is not None:
                self._echo.flush()

    def isatty(self) -> bool:
        return False


class LambdaLog:
    """The captured output; `save` writes it where the run's other files went."""

    def __init__(self, spool: IO[str]) -> None:
        self._spool = spool

    def save(self, path: Path) -> Path:
        self._spool.flush()
        self._spool.seek(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as target:
            for chunk in iter(lambda: self._spool.read(1 << 16), ""):
                target.write(chunk)
        self._spool.seek(0, 2)
        return path


def _is_powertools(handler: logging.Handler) -> bool:
    from aws_lambda_powertools.logging.formatter import BasePowertoolsFormatter

    return isinstance(handler.formatter, BasePowertoolsFormatter)


def _stream_handlers(*streams: object) -> list[logging.StreamHandler[IO[str]]]:
    """Handlers to point at the log: Powertools' (wherever they write: the handler binds the
    stdout of the moment its Logger was made) and any that write to one of `streams`
    (default: the console), e.g. one a library put on the root logger."""
    targets = streams or (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    found = []
    for name in {"", *logging.root.manager.loggerDict}:
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.StreamHandler):
                continue
            if (not streams and _is_powertools(handler)) or any(
                handler.stream is target for target in targets
            ):
                found.append(handler)
    return found


class _NotPowertools(logging.Filter):
    """Powertools loggers propagate to the root: their records are in the log already, once,
    as JSON."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(_is_powertools(handler) for handler in logger.handlers):
                return False
            logger = logger.parent if logger.propagate else None
        return True


def _closed(stream: IO[str]) -> bool:
    return bool(getattr(stream, "closed", False))


def _point(handler: logging.StreamHandler[IO[str]], stream: IO[str]) -> IO[str] | None:
    """handler.setStream, also for a handler left on a stream closed since (an earlier
    command's captured stdout, in a process that runs more than one): setStream would flush
    it first and fail."""
    if _closed(handler.stream):
        previous, handler.stream = handler.stream, stream
        return previous
    return handler.setStream(stream)


@contextmanager
def lambda_output(*, verbose: bool, live: Path | None = None) -> Iterator[LambdaLog]:
    """Redirect everything but the CLI's consoles into a log for the length of the block;
    into the file `live` as it happens (`local up`, which runs until stopped), else a spool
    saved where the run's files go."""
    opened = live.open("w+", encoding="utf-8") if live is not None else None
    with opened or tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        sink = _Sink(spool, sys.stderr if verbose else None)
        stream: IO[str] = sink  # type: ignore[assignment] # a file-like object, duck-typed
        saved_stdout = sys.stdout
        handlers = _stream_handlers()
        saved = [(handler, _point(handler, stream)) for handler in handlers]
        root_handler = logging.StreamHandler(stream)
        root_handler.setLevel(logging.WARNING)
        root_handler.addFilter(_NotPowertools())
        logging.root.addHandler(root_handler)
        sys.stdout = stream
        try:
            yield LambdaLog(spool)
        finally:
            sys.stdout = saved_stdout
            logging.root.removeHandler(root_handler)
            for handler, previous in saved:
                if previous is not None:
                    _point(handler, saved_stdout if _closed(previous) else previous)
            # Loggers made while the block ran (a handler module imported then) bound the sink.
            for handler in _stream_handlers(stream):
                handler.setStream(saved_stdout)
            sink.flush()
