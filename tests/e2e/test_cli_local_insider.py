"""`imagebatch local run --as-insider`: the manifest is uploaded by the insider (a principal
of the account outside the stack, README "Security model"), whose upload the local IAM check
decides with its own role and the bucket policy; manifests/ is open to it, so the batch runs
as any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagebatch_cli.app import app
from typer.testing import CliRunner

pytestmark = pytest.mark.e2e


def test_the_insider_may_upload_a_manifest_and_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    header = {"batch": {"backend": "bedrock", "model": "stability.sd3-5-large-v1:0"}}
    items = [{"id": f"shot-{i}", "prompt": f"a lamp, view {i}"} for i in range(2)]
    manifest = tmp_path / "insider.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in [header, *items]) + "\n")

    result = CliRunner().invoke(
        app, ["local", "run", str(manifest), "--renderer", "null", "--as-insider", "--json"]
    )

    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["batch"]["images_succeeded"] == 2
    assert "as the insider" in result.stderr
