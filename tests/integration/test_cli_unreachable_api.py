"""The query commands name an API they cannot reach (a closed loopback port): the one CLI error
that needs a socket, so it runs here and not in tests/unit (moved from test_cli_errors.py)."""

from __future__ import annotations

import pytest
from imagebatch_cli.app import app
from imagebatch_cli.exit_codes import ExitCode
from support.cli import CLOSED_PORT_URL
from support.cli import clean as _clean
from typer.testing import CliRunner

runner = CliRunner()


def test_an_unreachable_query_api_is_named(no_aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for args in (["batches"], ["costs"], ["cost", "b1"]):
        output = _clean(
            runner.invoke(app, ["--region", "us-east-1", *args, "--api", CLOSED_PORT_URL]),
            ExitCode.ERROR,
        )
        assert "cannot reach the query API at 127.0.0.1:9" in output
