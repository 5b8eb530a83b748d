"""Every command works from any directory: the application and the samples are found from the
CLI's own files, and nothing but paths the user types depends on the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from imagebatch_cli.app import app
from imagebatch_cli.project import (
    ProjectFilesNotFound,
    project_root,
    sample_manifest,
    sample_names,
    template_path,
)
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_the_application_is_found_from_the_package_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a working directory with nothing of imagebatch in it
    monkeypatch.chdir(tmp_path)
    # THEN the template, its definition and handlers are the repository's
    assert project_root() == REPO
    assert template_path() == REPO / "template.yaml"
    # and a --template typed relative to the working directory is taken as typed
    (tmp_path / "mine.yaml").write_text("Resources: {}\n")
    assert template_path(Path("mine.yaml")) == tmp_path / "mine.yaml"


def test_a_folder_without_the_application_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectFilesNotFound, match=r"template\.yaml.*--template"):
        project_root(tmp_path)


def test_samples_are_named_and_found() -> None:
    assert sample_manifest("demo") == REPO / "events" / "manifests" / "demo.jsonl"
    assert sample_manifest("demo.csv") == REPO / "events" / "manifests" / "demo.csv"
    assert {"demo", "demo.csv"} <= set(sample_names())
    with pytest.raises(ProjectFilesNotFound, match=r"samples: .*demo"):
        sample_manifest("../template")


def test_validate_a_packaged_sample_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "--sample", "demo"])
    assert result.exit_code == 0, result.output
    assert "12 valid item(s)" in result.output


def test_a_manifest_and_a_sample_together_are_a_usage_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "prompt": "p"}\n')
    result = runner.invoke(app, ["validate", str(manifest), "--sample", "demo"])
    assert result.exit_code == 2
    assert "one of them" in result.output
    assert runner.invoke(app, ["validate"]).exit_code == 2
