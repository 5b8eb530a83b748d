"""One lock file (requirements.lock, pip-tools) and the requirement files produced from it:
the dev venv's, the Lambda layer's and the containers'. Each must be exactly what
tools/requirements_from_lock.py produces from the lock, and the lock must satisfy
pyproject.toml's ranges."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from requirements_from_lock import ROOT, closure, normalise, produced, read_lock

LOCK_TEXT = (ROOT / "requirements.lock").read_text(encoding="utf-8")
PYPROJECT_TEXT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
PRODUCED = produced(LOCK_TEXT, PYPROJECT_TEXT)


@pytest.mark.parametrize("path", sorted(PRODUCED), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_requirement_file_is_what_the_lock_produces(path: Path) -> None:
    assert path.is_file(), (
        f"{path.relative_to(ROOT)} missing: python tools/requirements_from_lock.py"
    )
    assert path.read_text(encoding="utf-8") == PRODUCED[path], (
        f"{path.relative_to(ROOT)} is out of step with requirements.lock: "
        "python tools/requirements_from_lock.py"
    )


def test_the_lock_satisfies_every_range_in_pyproject() -> None:
    project = tomllib.loads(PYPROJECT_TEXT)["project"]
    lock = read_lock(LOCK_TEXT)
    declared = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared += extra
    for line in declared:
        requirement = Requirement(line)
        entry = lock[normalise(requirement.name)]
        version = Version(entry.version)
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{line}: the lock has {entry.version}"
        )


def test_torch_stays_the_wheel_on_disk() -> None:
    # `pip install torch==2.13.0` must keep resolving to the local wheel: the lock and every
    # produced file name that version, without the wheel's local label.
    assert read_lock(LOCK_TEXT)["torch"].version.split("+")[0] == "2.13.0"
    dev = PRODUCED[ROOT / "requirements-dev.txt"]
    assert "torch==2.13.0\n" in dev


def test_the_layer_carries_no_laptop_stack_and_the_closure_follows_via_lines() -> None:
    layer = PRODUCED[ROOT / "src" / "requirements.txt"]
    for name in ("torch", "diffusers", "moto", "flask", "gunicorn", "pytest"):
        assert f"\n{name}==" not in layer
    # botocore comes in through boto3, aws-xray-sdk through aws-lambda-powertools[tracer]
    assert "\nbotocore==" in layer and "\naws-xray-sdk==" in layer
    text = (
        "a==1\n    # via imagebatch (pyproject.toml)\nb==2\n    # via\n    #   a\n    #   z\nc==3\n"
    )
    lock = read_lock(text)
    assert [e.name for e in closure(lock, {"a"})] == ["a", "b"]
    with pytest.raises(SystemExit, match="make lock"):
        closure(lock, {"missing"})
