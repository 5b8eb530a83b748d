"""`imagebatch validate` and `estimate` read the template and plan as ingest would, and never
start or even import the local AWS: the moto harness (imagebatch_local.cloud, its fakes, moto)
is for `local run`. Checked in a fresh interpreter, since this test process has usually loaded
moto for other tests already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEARCH_PATH = os.pathsep.join(
    str(REPO / folder) for folder in ("src", "tools", "containers/serving")
)
LOCAL_AWS = ("moto", "imagebatch_local.cloud", "imagebatch_local.fakes")

# Runs the commands through the CLI's own app, then lists every loaded module.
PROBE = """
import json, sys
from typer.testing import CliRunner
from imagebatch_cli.app import app
import imagebatch_cli.commands.estimate, imagebatch_cli.commands.validate
codes = [CliRunner().invoke(app, args).exit_code for args in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def loaded_after(*commands: list[str]) -> tuple[list[int], list[str]]:
    env = {**os.environ, "PYTHONPATH": SEARCH_PATH, "NO_COLOR": "1"}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(commands))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return result["codes"], result["modules"]


def local_aws_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(f"{n}.") for n in LOCAL_AWS)]


@pytest.mark.parametrize(
    "command",
    [["validate", "--sample", "demo"], ["estimate", "--sample", "demo"]],
    ids=lambda c: c[0],
)
def test_validate_and_estimate_do_not_import_the_local_aws(command: list[str]) -> None:
    # GIVEN a fresh interpreter
    # WHEN the command runs on the demo manifest
    codes, modules = loaded_after(command)
    # THEN it did its work (exit 0) without loading moto or the local AWS package's harness
    assert codes == [0]
    assert local_aws_modules(modules) == []


def test_the_probe_sees_the_local_aws_when_it_is_imported() -> None:
    # GIVEN the same probe, WHEN a module of the local AWS is imported by hand
    env = {**os.environ, "PYTHONPATH": SEARCH_PATH}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, imagebatch_local.cloud.session; print(' '.join(sorted(sys.modules)))",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # THEN the check above would catch it: the probe is not blind
    assert "imagebatch_local.cloud.session" in local_aws_modules(run.stdout.split())
