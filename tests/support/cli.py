"""The CLI's tests' environment: no AWS reachable, and a command that ended by its own
handling (tests/unit/test_cli_errors.py, tests/integration/test_cli_unreachable_api.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import Result

CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens on loopback


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No region, no credentials, no config files; botocore never asks an instance role."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "IMAGEBATCH_API":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)


def clean(result: Result, code: int) -> str:
    """The command ended with `code` through its own handling: no exception escaped it."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == code, result.output
    return result.output
