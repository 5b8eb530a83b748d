"""Every installed requirement file, produced from the one lock file (requirements.lock).

`make lock` resolves pyproject.toml's ranges (all extras) into requirements.lock with pip-tools'
pip-compile, which uses pip itself and so pip's configuration: the torch wheel on this
machine's disk (find-links) resolves as any other. This module then writes, for each consumer,
the lock's exact pins of what its roots need, transitively (the lock's `# via` lines are the
edges):

| file | roots | installed by |
|---|---|---|
| requirements-dev.txt | dependencies, `local`, `dev` | `make venv` |
| src/requirements.txt | dependencies | `sam build` (the DomainLayer) |
| containers/serving/requirements.txt | boto3, pydantic, `serving` | both images |
| containers/diffusers/requirements.txt | `diffusers-image` | the CUDA/CPU image |

containers/neuron/requirements.txt is not produced: optimum-neuron pins transformers and
diffusers below `local`'s, so it cannot share this resolution (the file says so).

A local version label (`torch==2.13.0+cpu`, the wheel on disk) is written without it:
`torch==2.13.0` installs that wheel here and the CUDA build from PyTorch's index in the
image. Run: `python tools/requirements_from_lock.py` (writes) or `--check` (exit 1 when a file
differs from what the lock produces; tests/unit/test_requirements_lock.py runs the same check).
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
PROJECT = "imagebatch"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?(.+?)\s*$")

HEADER = (
    "# Produced from requirements.lock by tools/requirements_from_lock.py; do not edit.\n"
    "# Change a range in pyproject.toml, then `make lock requirements`.\n"
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    via: frozenset[str]


def read_lock(text: str) -> dict[str, Locked]:
    """The lock's pins with who needs each (`imagebatch` for a root of pyproject.toml)."""
    entries: dict[str, Locked] = {}
    name: str | None = None
    version = ""
    via: set[str] = set()

    def close() -> None:
        if name is not None:
            entries[name] = Locked(name, version, frozenset(via))

    for line in text.splitlines():
        pin = _PIN.match(line)
        if pin:
            close()
            name, version, via = normalise(pin.group(1)), pin.group(2), set()
            continue
        parent = _VIA.match(line)
        if name is not None and parent and parent.group(1) != "via":
            token = parent.group(1).split()[0]
            via.add(PROJECT if token == PROJECT else normalise(token))
    close()
    return entries


def requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = _NAME.match(requirement)
        if match:
            names.add(normalise(match.group(1)))
    return names


def closure(lock: dict[str, Locked], roots: set[str]) -> list[Locked]:
    """The roots and everything in the lock one of them needs, transitively, by name."""
    missing = roots - set(lock)
    if missing:
        raise SystemExit(f"not in requirements.lock (run `make lock`): {sorted(missing)}")
    chosen = set(roots)
    grew = True
    while grew:
        grew = False
        for entry in lock.values():
            if entry.name not in chosen and entry.via & chosen:
                chosen.add(entry.name)
                grew = True
    return sorted((lock[name] for name in chosen), key=lambda e: e.name)


def pin_line(entry: Locked) -> str:
    return f"{entry.name}=={entry.version.split('+', 1)[0]}"


def produced(lock_text: str, pyproject_text: str) -> dict[Path, str]:
    """Each produced file's path and content."""
    project = tomllib.loads(pyproject_text)["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    base = requirement_names(project["dependencies"])
    lock = read_lock(lock_text)
    consumers = {
        ROOT / "requirements-dev.txt": (
            "# The dev venv (make venv): the package's dependencies, `local` and `dev`.\n",
            base | requirement_names(extras["local"]) | requirement_names(extras["dev"]),
        ),
        ROOT / "src" / "requirements.txt": (
            "# The DomainLayer (ContentUri: src/), installed by `sam build` for python3.12/arm64:\n"
            "# [project].dependencies and what they need, at the versions the tests ran with.\n",
            base,
        ),
        ROOT / "containers" / "serving" / "requirements.txt": (
            "# The serving app in both images: boto3 and pydantic (the shared imagebatch wire\n"
            "# models behave as tested) and the `serving` extra.\n",
            {"boto3", "pydantic"} | requirement_names(extras["serving"]),
        ),
        ROOT / "containers" / "diffusers" / "requirements.txt": (
            "# The CUDA/CPU image's pipeline stack: the `diffusers-image` extra. torch's CUDA\n"
            "# libraries come with the CUDA wheel from the Dockerfile's TORCH_INDEX.\n",
            requirement_names(extras["diffusers-image"]),
        ),
    }
    return {
        path: HEADER + about + "".join(f"{pin_line(e)}\n" for e in closure(lock, roots))
        for path, (about, roots) in consumers.items()
    }


def main(argv: list[str]) -> int:
    files = produced(LOCK.read_text(encoding="utf-8"), PYPROJECT.read_text(encoding="utf-8"))
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    if "--check" in argv:
        for path in stale:
            sys.stderr.write(f"{path.relative_to(ROOT)} differs from requirements.lock\n")
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path], encoding="utf-8")
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
