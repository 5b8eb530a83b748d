"""`imagebatch local run --sample demo` as a newcomer runs it: from a folder of their own, a
PARTIAL batch's exit code, the Lambdas' logs in a file and not on the console, a clean batch
folder, and a review page whose links open the local images."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from imagebatch_cli.app import app
from imagebatch_cli.exit_codes import exit_code_for_status
from imagebatch_cli.project import sample_manifest
from typer.testing import CliRunner

from imagebatch.models.records import batch_id_for

pytestmark = pytest.mark.e2e
# The local stack's bucket: the account and the stack id's UUID (uuid5 of the stack name),
# as template.yaml's DataBucket names it.
LOCAL_BUCKET = "imagebatch-123456789012-d4005fb3-87db-5cc3-bf09-776370523461"


def test_the_demo_runs_from_anywhere_and_leaves_a_clean_reviewable_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a folder with nothing of imagebatch in it, and an earlier run's leftovers in the
    # folder this batch id lands in (same manifest, same id)
    monkeypatch.chdir(tmp_path)
    demo = sample_manifest("demo")
    content = hashlib.sha256(demo.read_bytes()).hexdigest()
    batch_id = batch_id_for(LOCAL_BUCKET, "manifests/demo.jsonl", content)
    stale = tmp_path / "out" / batch_id / "an-image-from-an-earlier-run-1.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")

    # WHEN the packaged demo runs with refusals injected (--json: the summary on stdout)
    result = CliRunner().invoke(
        app,
        [
            "local",
            "run",
            "--sample",
            "demo",
            "--filter-rate",
            "0.2",
            "--fault-seed",
            "3",
            "--retry-base-ms",
            "5",
            "--json",
        ],
    )

    # THEN the exit code is the batch's status, and stdout is exactly one JSON document
    assert "Traceback" not in result.output
    report = json.loads(result.stdout)
    summary = report["batch"]
    assert summary["batch_id"] == batch_id
    assert result.exit_code == exit_code_for_status(summary["status"]), result.output
    assert summary["status"] == "PARTIAL" and result.exit_code == 3
    # AND no Lambda log line or metric blob reached the console; they are in lambda.log
    assert '"level"' not in result.output and "_aws" not in result.output
    log = Path(report["lambda_log"]).resolve()
    assert log == tmp_path / "out" / batch_id / "lambda.log"
    assert '"message":"image failed"' in log.read_text()
    # AND the folder holds this run only: no leftover image
    folder = tmp_path / "out" / batch_id
    assert not stale.exists()
    pngs = {p.name for p in folder.glob("*.png")}
    assert len(pngs) == summary["images_succeeded"]
    # AND every image link of the review page opens a local file
    page = folder / "reports" / "index.html"
    links = re.findall(r'href="([^"]+\.png)" data-key', page.read_text())
    assert len(links) == summary["images_succeeded"]
    assert all((page.parent / link).resolve().is_file() for link in links)
    assert "charged to budget" in page.read_text()


def test_several_manifests_run_in_order_in_one_local_aws_each_with_its_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a manifest and the same manifest with one prompt fixed (issue 20)
    monkeypatch.chdir(tmp_path)
    header = {"batch": {"backend": "bedrock", "model": "stability.sd3-5-large-v1:0"}}
    items = [{"id": f"shot-{i}", "prompt": f"a lamp, view {i}"} for i in range(4)]
    first, fixed = tmp_path / "lamps.jsonl", tmp_path / "lamps-fixed.jsonl"
    first.write_text("\n".join(json.dumps(x) for x in [header, *items]) + "\n")
    items[2] = {**items[2], "prompt": "a brass lamp, view 2"}
    fixed.write_text("\n".join(json.dumps(x) for x in [header, *items]) + "\n")

    # WHEN both run through one `local run`
    result = CliRunner().invoke(
        app, ["local", "run", str(first), str(fixed), "--renderer", "null", "--json"]
    )

    # THEN each has its summary, in order, and the second made only the fixed image
    assert "Traceback" not in result.output
    runs = json.loads(result.stdout)["runs"]
    assert result.exit_code == 0, result.output
    assert [r["batch"]["images_succeeded"] for r in runs] == [4, 4]
    assert [r["batch"]["images_reused"] for r in runs] == [0, 3]
    assert runs[0]["batch"]["batch_id"] != runs[1]["batch"]["batch_id"]
    assert all(Path(r["images_dir"]).is_dir() for r in runs)
