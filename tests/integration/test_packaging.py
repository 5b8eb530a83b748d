"""A plain wheel install runs from anywhere: the wheel carries the SAM application (template,
state machine, every function's code) and the sample manifests, and the CLI finds them there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from imagebatch_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
PACKAGED = "imagebatch_cli/application"
# What a wheel build does not read: installs, caches, outputs, and code that is not shipped.
NOT_BUILT_FROM = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "node_modules",
    ".aws-sam",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".cache",
    ".iam-usage",
    "out",
    "tests",
    "bench",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    try:
        setuptools_major = int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        pytest.skip("setuptools is not installed here: the wheel cannot be built offline")
    if setuptools_major < 69:
        pytest.skip(f"setuptools {metadata.version('setuptools')} < 69 (pyproject's build need)")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "imagebatch-source"
    shutil.copytree(REPO, source, ignore=NOT_BUILT_FROM)
    # --no-build-isolation: build with this environment's setuptools, no index needed
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*build, "-w", str(work / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = (work / "dist").glob("imagebatch-*.whl")
    yield built


def test_the_wheel_carries_every_file_the_template_runs_and_the_samples(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    template = load_template(REPO / "template.yaml")
    code_dirs = {
        str(resource["Properties"]["CodeUri"]).strip("/")
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    definitions = {
        str(resource["Properties"]["DefinitionUri"])
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::StateMachine"
    }
    assert len(code_dirs) >= 8 and definitions
    expected = {
        "template.yaml",
        "samconfig.toml",
        *(f"{code}/app.py" for code in code_dirs),
        *definitions,
        *(p.relative_to(REPO).as_posix() for p in (REPO / "events" / "manifests").iterdir()),
    }
    missing = sorted(name for name in expected if f"{PACKAGED}/{name}" not in names)
    assert not missing, f"not in {wheel.name}: {missing}"
    # and the package data the handlers and the pricer read
    assert {"imagebatch/data/aws_prices.json", "imagebatch/data/bedrock_models.json"} <= names


def test_the_installed_wheel_finds_its_application_from_an_empty_folder(
    wheel: Path, tmp_path: Path
) -> None:
    # GIVEN the wheel unpacked as pip installs it, first on the path, and an empty folder
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "NO_COLOR": "1", "COLUMNS": "200"}
    # WHEN the CLI validates the packaged demo there
    cli = [sys.executable, "-c", "from imagebatch_cli.app import main; main()"]
    run = subprocess.run(
        [*cli, "validate", "--sample", "demo"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # THEN the sample is the wheel's own copy, and it validates as ingest would
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{site / PACKAGED}/events/manifests/demo.jsonl" in run.stdout
    assert "ingest would accept this batch" in run.stdout
    # AND the template it would run is the wheel's too, not this checkout's
    where = subprocess.run(
        [sys.executable, "-c", "from imagebatch_cli.project import template_path as t; print(t())"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(site / PACKAGED / "template.yaml")
