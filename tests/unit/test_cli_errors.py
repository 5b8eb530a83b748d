"""Hostile input gets one clear line and a documented exit code, never a traceback.

Each case is what a newcomer typed (issue: run from anywhere, scriptable output); the exit
codes are imagebatch_cli.exit_codes'. AWS is never reached: no region, no credentials, a
closed loopback port, and the instance-metadata lookup turned off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from imagebatch_cli.app import app
from imagebatch_cli.exit_codes import ExitCode, exit_code_for_status
from support.cli import clean as _clean
from typer.testing import CliRunner

runner = CliRunner()


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["cost", "b1", "--table", "t"], ExitCode.ERROR, "no AWS region"),
        (["--region", "us-east-1", "cost", "b1", "--table", "t"], ExitCode.ERROR, "credentials"),
        (["--profile", "nosuch", "cost", "b1", "--table", "t"], ExitCode.ERROR, "'nosuch'"),
        (["redrive", "b1", "--bucket", "b"], ExitCode.ERROR, "no AWS region"),
        # the deployed-stack commands take samconfig.toml's stack and region: credentials next
        (["submit", "--sample", "demo"], ExitCode.ERROR, "no AWS credentials found"),
        (["watch", "b1"], ExitCode.ERROR, "no AWS credentials found"),
        (["stack"], ExitCode.ERROR, "no AWS credentials found"),
        (["batches", "--stack", "s"], ExitCode.ERROR, "no AWS credentials found"),
        (["redrive", "b1", "--upload"], ExitCode.USAGE, "--upload needs --stack or --bucket"),
        (["models", "--live"], ExitCode.ERROR, "no AWS region"),
        (["cost", "nope"], ExitCode.ERROR, "no local ledger"),
        (["batches", "--tag", "project"], ExitCode.USAGE, "key:value"),
        (["batches", "--since", "3"], ExitCode.USAGE, "--since"),
        (["costs", "--group-by", "color"], ExitCode.USAGE, "tag:<key>"),
        (
            ["costs", "--since", "2026-11-10", "--until", "2026-11-01"],
            ExitCode.USAGE,
            "range is empty",
        ),
        (["batches", "--since", "1d", "--until", "2026-11-10"], ExitCode.USAGE, "range is empty"),
        (
            ["estimate", "--sample", "demo", "--sagemaker-instance", "ml.x9"],
            ExitCode.USAGE,
            "ml.x9",
        ),
        (["estimate", "--sample", "demo", "--deadline", "0.1"], ExitCode.ERROR, "deadline"),
        (["local", "run", "--sample", "nope"], ExitCode.USAGE, "no sample manifest"),
        (
            ["local", "run", "--sample", "demo", "--parameter-overrides", "ChunkSize"],
            ExitCode.USAGE,
            "is not Key=Value",
        ),
        (
            ["estimate", "--sample", "demo", "--parameter-overrides", "NoSuchThing=1"],
            ExitCode.USAGE,
            "no parameter(s) NoSuchThing",
        ),
        (["validate", "missing.jsonl"], ExitCode.USAGE, "does not exist"),
    ],
)
def test_a_bad_input_is_one_line_and_an_exit_code(args: list[str], code: int, says: str) -> None:
    output = _clean(runner.invoke(app, args), code)
    assert says in output


def test_a_rate_outside_zero_to_one_is_refused_before_start_up(no_aws: None) -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["local", "run", "--sample", "demo", "--throttle-rate", "1.5"])
    output = _clean(result, ExitCode.USAGE)
    assert "Invalid value for '--throttle-rate'" in output
    assert time.monotonic() - started < 2, "refused before the local AWS starts"


def test_version_and_short_help() -> None:
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("imagebatch ")
    for args in (["-h"], ["local", "run", "-h"], ["cost", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output, args


def test_batch_statuses_have_distinct_exit_codes() -> None:
    codes = {s: exit_code_for_status(s) for s in ("SUCCEEDED", "PARTIAL", "FAILED", "REJECTED")}
    assert codes["SUCCEEDED"] == 0
    assert len(set(codes.values())) == 4 and ExitCode.USAGE not in codes.values()


def _bad_manifest(path: Path) -> Path:
    long_id = "an-item-id-long-enough-to-push-the-line-past-eighty-columns-x"
    lines = [
        {"batch": {"backend": "bedrock", "model": "stability.sd3-5-large-v1:0"}},
        {"id": "ok-1", "prompt": "a mug"},
        {"id": long_id, "prompt": "a mug", "width": 1000, "height": 1000},
        {"id": "two-errors", "prompt": "", "count": 99},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_validate_prints_one_whole_line_per_invalid_line(tmp_path: Path) -> None:
    manifest = _bad_manifest(tmp_path / "bad.jsonl")
    output = _clean(runner.invoke(app, ["validate", str(manifest)]), ExitCode.REJECTED)
    error_lines = [line for line in output.splitlines() if line.startswith(f"{manifest}:")]
    error_lines = [line for line in error_lines if not line.startswith(f"{manifest}: ")]
    assert [line.split(":")[1] for line in error_lines] == ["3", "4"]
    assert (
        "width (id an-item-id-long-enough-to-push-the-line-past-eighty-columns-x):"
        in (error_lines[0])
    )
    assert "prompt" in error_lines[1] and "count" in error_lines[1]
    assert "ingest would REJECT" in output


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed entry point, as a shell runs it (stdout and stderr are pipes)."""
    return subprocess.run(
        [sys.executable, "-c", "from imagebatch_cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_the_entry_point_never_prints_a_traceback_and_never_cuts_a_piped_line(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "COLUMNS": "40",
    }
    no_region = _cli(["cost", "b1", "--table", "t"], env, tmp_path)
    assert no_region.returncode == ExitCode.ERROR
    assert "Traceback" not in no_region.stderr and "no AWS region" in no_region.stderr
    manifest = _bad_manifest(tmp_path / "bad.jsonl")
    piped = _cli(["validate", str(manifest)], env, tmp_path)
    assert piped.returncode == ExitCode.REJECTED, piped.stderr
    line = next(line for line in piped.stderr.splitlines() if line.startswith(f"{manifest}:3:"))
    assert len(line) > 80 and "-x): " in line
    listed = _cli(["models"], env, tmp_path)
    assert listed.returncode == 0
    assert "│ stability.stable-image-ultra-v1:1 " in listed.stdout
