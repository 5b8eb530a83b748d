"""`imagebatch local check` on what `imagebatch local run` left: a finished batch holds every
invariant (imagebatch.costs.invariants), and a tampered run folder is named line by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from imagebatch_cli.app import app
from imagebatch_cli.project import sample_manifest
from support.cli import clean
from typer.testing import CliRunner

pytestmark = pytest.mark.e2e


def test_a_local_run_holds_every_invariant_and_a_lost_png_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the demo run locally with refusals (a PARTIAL batch: failed images, a redrive)
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke(
        app,
        [
            *("local", "run", str(sample_manifest("demo")), "--renderer", "null"),
            *("--filter-rate", "0.2", "--fault-seed", "3", "--retry-base-ms", "5"),
        ],
    )
    assert "Traceback" not in run.output
    (folder,) = (tmp_path / "out").iterdir()
    batch_id = folder.name

    # WHEN its folder is checked
    result = CliRunner().invoke(app, ["local", "check", batch_id])

    # THEN every invariant holds (the contact sheet's charge and hold, settled after
    # finalize, included)
    output = clean(result, 0)
    assert "9 of 9 invariants hold; 0 violation(s)" in output

    # WHEN one image is lost from the folder
    lost = sorted(folder.glob("*.png"))[0]
    lost.unlink()

    # THEN its record is named, and the command fails
    output = clean(CliRunner().invoke(app, ["local", "check", batch_id]), 1)
    assert f"record-has-png: {lost.stem}: SUCCEEDED but no PNG at" in output
    assert "8 of 9 invariants hold; 1 violation(s)" in output
