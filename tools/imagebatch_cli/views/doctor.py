"""`imagebatch doctor`'s output: one line per check, its fix under it, and a count."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from imagebatch_cli.views.console import emit_json, say

if TYPE_CHECKING:
    from imagebatch_cli.doctor_checks import Check

LABELS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def print_checks(checks: list[Check], *, as_json: bool) -> None:
    counts = Counter(check.status for check in checks)
    if as_json:
        emit_json(
            {
                "ok": not counts["fail"],
                "checks": [check.model_dump(mode="json") for check in checks],
            }
        )
        return
    for check in checks:
        say(f"{LABELS[check.status]}  {check.name}: {check.detail}")
        if check.fix:
            say(f"      fix: {check.fix}")
    say(f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")
