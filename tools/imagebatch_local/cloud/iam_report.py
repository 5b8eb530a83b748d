"""Which permissions of template.yaml no local run used: least privilege shown, not claimed.

Each local AWS started with IMAGEBATCH_IAM_USAGE_DIR set writes there every grant of every
role (one action pattern on one resource pattern of an Allow statement) and which of them a
call used (iam_enforcer.py). After the e2e suite (`make iam-report`):

    python -m imagebatch_local.cloud.iam_report DIR [--template template.yaml]

lists the grants no run used. Each must be explained in the template: a comment containing
"Unused locally" right above the statement (or the SAM property) that grants it, or above
the role's resource for a whole role. The exit status is 1 while one is not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "unused locally"
_REGIONS = re.compile(r"\b[a-z]{2}(?:-gov)?-[a-z]+-\d\b")


@dataclass(frozen=True, order=True)
class UnusedGrant:
    role: str
    line: int
    action: str
    resource: str
    origin: str
    explained: bool


def _normal(resource: str) -> str:
    """A grant's resource with its region generalized: runs in several regions are one."""
    return _REGIONS.sub("${AWS::Region}", resource)


def _key(grant: dict[str, Any]) -> tuple[str, int, str, str]:
    return (grant["role"], int(grant["line"]), grant["action"], _normal(grant["resource"]))


def load_usage(paths: Iterable[Path]) -> tuple[dict[tuple[str, int, str, str], Any], set[Any]]:
    """Every grant seen in any run, and those used in any run (keys region-generalized)."""
    grants: dict[tuple[str, int, str, str], Any] = {}
    used: set[tuple[str, int, str, str]] = set()
    role_lines: dict[str, int] = {}
    for path in paths:
        usage = json.loads(path.read_text(encoding="utf-8"))
        role_lines.update(usage["role_lines"])
        for grant in usage["grants"]:
            grants[_key(grant)] = {**grant, "role_line": usage["role_lines"][grant["role"]]}
        for key in usage["used"]:
            role, line, action, resource = key.split("|", 3)
            used.add((role, int(line), action, _normal(resource)))
    return grants, used


def comment_above(lines: list[str], line: int) -> str:
    """The comment lines right above a 1-based template line, joined (lower case); for the
    first key of a mapping (what a grant's line is for SAM's own grants), also those above
    the mapping's key: `# ...` then `DeadLetterConfig:` then `Type: SQS`."""
    block: list[str] = []
    index = line - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        block.append(lines[index].strip().lstrip("#").strip())
        index -= 1
    text = " ".join(reversed(block)).lower()
    parent = lines[index].strip() if index >= 0 else ""
    if not block and parent.endswith(":") and not parent.startswith("-"):
        return comment_above(lines, index + 1)
    return text


def unused_grants(usage_dir: Path, template: Path) -> list[UnusedGrant]:
    grants, used = load_usage(sorted(usage_dir.glob("usage-*.json")))
    lines = template.read_text(encoding="utf-8").splitlines()
    unused = []
    for key, grant in grants.items():
        if key in used:
            continue
        explained = any(
            MARKER in comment_above(lines, at) for at in (grant["line"], grant["role_line"]) if at
        )
        unused.append(
            UnusedGrant(grant["role"], grant["line"], key[2], key[3], grant["origin"], explained)
        )
    return sorted(unused)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("usage_dir", type=Path)
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    args = parser.parse_args(argv)
    if not any(args.usage_dir.glob("usage-*.json")):
        sys.stdout.write(f"no usage files in {args.usage_dir}: run the e2e suite with it first\n")
        return 2
    unused = unused_grants(args.usage_dir, args.template)
    for grant in unused:
        status = "explained" if grant.explained else "NOT EXPLAINED"
        sys.stdout.write(
            f"{args.template}:{grant.line}  {grant.role}  {grant.action}  {grant.resource}  "
            f"({grant.origin}; {status})\n"
        )
    missing = [g for g in unused if not g.explained]
    sys.stdout.write(
        f"{len(unused)} grant(s) no local run used; {len(missing)} without an "
        f'"Unused locally" comment in {args.template}\n'
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
