"""The batch summary is one typed record: read by attribute everywhere but the ledger
adapter's (de)serialisation, with every counted operation a field and one money formatter.
(That the record keeps its item lossless is the adapter's: tests/integration/
test_batch_record_item.py.)"""

from __future__ import annotations

import re
from pathlib import Path

from imagebatch.costs.usage import USAGE_FIELDS
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.money import format_usd

ROOT = Path(__file__).resolve().parents[2]
# The summary by string key: summary["x"], summary.get("x")
BY_KEY = re.compile(r"summary\[|summary\.get\(")
# Where the summary item's attribute names may be spelled out: the ledger adapter.
ADAPTER = ROOT / "src" / "imagebatch" / "aws"
# Micro-dollars formatted inline instead of with models.money.format_usd
INLINE_USD = re.compile(r"""f["']\$\{[^}]*/ ?(1e6|1_000_000)""")
# the formatter itself
INLINE_USD_ALLOWED = {"money.py"}


def _python_files() -> list[Path]:
    return [
        path
        for folder in ("src", "tools", "functions")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]


def test_no_summary_is_read_by_string_key_outside_the_ledger_adapter() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _python_files()
        if ADAPTER not in path.parents
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BY_KEY.search(line)
    ]
    assert found == [], "read BatchRecord's attributes instead:\n" + "\n".join(found)


def test_every_counted_operation_is_a_field_of_the_record() -> None:
    # costs.usage.Usage keeps its counters in the summary under use_<name>
    missing = [name for name in USAGE_FIELDS if f"use_{name}" not in BatchRecord.model_fields]
    assert missing == []


def test_one_money_formatter() -> None:
    assert format_usd(1_234_567_890) == "$1,234.567890"
    assert format_usd(1_234_567_890, grouped=False) == "$1234.567890"
    assert format_usd(12_345, places=4) == "$0.0123"
    inline = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _python_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if INLINE_USD.search(line) and path.name not in INLINE_USD_ALLOWED
    ]
    assert inline == [], "format micro-dollars with imagebatch.models.money.format_usd"
