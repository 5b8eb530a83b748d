"""Handler settings: read from the environment on first use, once per loaded handler, and by
settings.py alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from imagebatch.settings import StorageSettings, cached_settings

SRC = Path(__file__).resolve().parents[2] / "src" / "imagebatch"
ENVIRONMENT_READERS = frozenset({"environ", "environb", "getenv", "getenvb"})


def test_a_loader_reads_the_environment_on_first_call_then_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a loader made (as at handler import) before the environment is set
    monkeypatch.delenv("LEDGER_TABLE", raising=False)
    load = cached_settings(StorageSettings)
    monkeypatch.setenv("DATA_BUCKET", "bucket-a")
    monkeypatch.setenv("LEDGER_TABLE", "table-a")

    # WHEN it is called, the environment changes and it is called again
    first = load()
    monkeypatch.setenv("LEDGER_TABLE", "table-b")

    # THEN it keeps what it read first, and a loader of its own (a handler loaded again)
    # reads the environment afresh
    assert first.ledger_table == "table-a" and load() is first
    assert cached_settings(StorageSettings)().ledger_table == "table-b"


def _environment_reads(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRONMENT_READERS
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in ENVIRONMENT_READERS for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_only_settings_reads_the_environment() -> None:
    # GIVEN every module of the package / WHEN searched for os.environ and os.getenv
    readers = {
        str(path.relative_to(SRC)): found
        for path in sorted(SRC.rglob("*.py"))
        if (found := _environment_reads(path))
    }
    # THEN settings.py is the only one
    assert list(readers) == ["settings.py"]
