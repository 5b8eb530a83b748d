"""`imagebatch models` (catalogue, live lifecycle) and `imagebatch redrive`."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from imagebatch_cli.app import app
from imagebatch_cli.commands.redrive import RedriveError, build_redrive
from imagebatch_cli.views.catalogue import catalogue_table
from rich.console import Console
from typer.testing import CliRunner

from imagebatch.aws.foundation_models import live_lifecycles
from imagebatch.models.bedrock_models import ModelSpec, load_catalogue
from imagebatch.models.records import FailureClass

runner = CliRunner()


def _details(model_id: str, status: str, eol: datetime | None = None) -> dict[str, Any]:
    """GetFoundationModel's documented response shape (botocore's bedrock service model)."""
    lifecycle: dict[str, Any] = {"status": status}
    if eol is not None:
        lifecycle["endOfLifeTime"] = eol
        lifecycle["legacyTime"] = datetime(2026, 1, 15, tzinfo=UTC)
    return {
        "modelDetails": {
            "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
            "modelId": model_id,
            "modelName": model_id,
            "providerName": "Test",
            "inputModalities": ["TEXT"],
            "outputModalities": ["IMAGE"],
            "modelLifecycle": lifecycle,
        }
    }


def spec_of(model_id: str) -> ModelSpec:
    found = load_catalogue().get(model_id)
    assert found is not None
    return found


def test_live_lifecycle_reads_get_foundation_model_and_compares() -> None:
    # GIVEN a bedrock client whose answers follow the documented shape (moto has no bedrock
    # GetFoundationModel, so botocore's Stubber checks every request and response against
    # the service model instead)
    client = boto3.client(
        "bedrock", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    catalogue = load_catalogue()
    answers = {
        "stability.sd3-5-large-v1:0": _details("stability.sd3-5-large-v1:0", "ACTIVE"),
        "stability.stable-image-core-v1:1": _details("stability.stable-image-core-v1:1", "ACTIVE"),
        # Bedrock says legacy: the catalogue says active, so the row differs.
        "stability.stable-image-ultra-v1:1": _details(
            "stability.stable-image-ultra-v1:1", "LEGACY", datetime(2027, 3, 1, tzinfo=UTC)
        ),
        "amazon.titan-image-generator-v2:0": _details(
            "amazon.titan-image-generator-v2:0", "LEGACY", datetime(2026, 6, 30, tzinfo=UTC)
        ),
    }
    with Stubber(client) as stub:
        for spec in catalogue.models:
            if spec.model_id in answers:
                stub.add_response(
                    "get_foundation_model",
                    answers[spec.model_id],
                    {"modelIdentifier": spec.model_id},
                )
            else:
                stub.add_client_error(
                    "get_foundation_model",
                    service_error_code="ResourceNotFoundException",
                    service_message="The model is not available in this region.",
                    http_status_code=404,
                    expected_params={"modelIdentifier": spec.model_id},
                )
        # WHEN each model's live lifecycle is read
        live = {entry.model_id: entry for entry in live_lifecycles(client, catalogue)}
        stub.assert_no_pending_responses()

    # THEN it is compared with the catalogue, and a missing model is reported, not raised
    assert live["stability.sd3-5-large-v1:0"].agrees_with(spec_of("stability.sd3-5-large-v1:0"))
    ultra = live["stability.stable-image-ultra-v1:1"]
    assert ultra.status == "LEGACY" and ultra.end_of_life == date(2027, 3, 1)
    assert not ultra.agrees_with(spec_of("stability.stable-image-ultra-v1:1"))
    titan = live["amazon.titan-image-generator-v2:0"]
    assert titan.agrees_with(spec_of("amazon.titan-image-generator-v2:0"))
    assert titan.legacy_since == date(2026, 1, 15)
    nova = live["amazon.nova-canvas-v1:0"]
    assert nova.status is None and nova.error is not None and "ResourceNotFound" in nova.error


def test_models_command_lists_the_catalogue() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    table = result.output.split("sizes", 1)[0]
    for model_id in load_catalogue().model_ids:
        assert model_id in table  # whole, even in an 80-column terminal
    console = Console(record=True, width=220)
    console.print(catalogue_table(load_catalogue(), date(2026, 11, 22)))
    text = console.export_text()
    assert "RETIRED (end of life 2026-06-30, use stability.stable-image-core-v1:1)" in text
    assert "standard-2048 $0.06" in text
    assert "stability.sd3-5-large-v1:0" in text and "active" in text


# -- redrive -----------------------------------------------------------------------------------

HEADER = json.dumps({"batch": {"backend": "bedrock", "model": "stability.sd3-5-large-v1:0"}})


def _item(image_id: str) -> str:
    return json.dumps({"id": image_id, "prompt": "p", "width": 1024, "height": 1024, "seed": 3})


def _failed(image_id: str, failure_class: str) -> str:
    return json.dumps({"image_id": image_id, "failure_class": failure_class, "failure_reason": "r"})


def test_redrive_keeps_exactly_the_failed_items_of_the_classes_asked_for() -> None:
    redrive = [HEADER, _item("a-1"), _item("b-1"), _item("c-2")]
    failed = [
        _failed("a-1", "content_filtered"),
        _failed("b-1", "throttled"),
        _failed("c-2", "timeout"),
    ]
    every = build_redrive(redrive, failed)
    assert every.items == 3 and every.lines[0] == HEADER
    some = build_redrive(redrive, failed, {FailureClass.THROTTLED, FailureClass.TIMEOUT})
    assert [json.loads(line)["id"] for line in some.lines[1:]] == ["b-1", "c-2"]
    assert dict(some.classes) == {"throttled": 1, "timeout": 1}


def test_redrive_without_a_header_is_refused() -> None:
    with pytest.raises(RedriveError, match="batch header"):
        build_redrive([_item("a-1")], [])


def test_redrive_command_writes_the_manifest_from_a_local_export(tmp_path: Path) -> None:
    reports = tmp_path / "out" / "b1" / "reports"
    reports.mkdir(parents=True)
    (reports / "redrive.jsonl").write_text("\n".join([HEADER, _item("a-1"), _item("b-1")]) + "\n")
    (reports / "failed.jsonl").write_text(
        "\n".join([_failed("a-1", "content_filtered"), _failed("b-1", "throttled")]) + "\n"
    )
    target = tmp_path / "again.jsonl"
    result = runner.invoke(
        app,
        [
            "redrive",
            "b1",
            "--out",
            str(tmp_path / "out"),
            "--class",
            "throttled",
            "--output",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 failed image(s) (1 throttled)" in result.output
    lines = target.read_text().splitlines()
    assert lines[0] == HEADER and [json.loads(line)["id"] for line in lines[1:]] == ["b-1"]
    # The written file is a valid manifest.
    assert runner.invoke(app, ["validate", str(target)]).exit_code == 0


def test_redrive_of_a_batch_without_failures_writes_nothing(tmp_path: Path) -> None:
    reports = tmp_path / "b2" / "reports"
    reports.mkdir(parents=True)
    (reports / "summary.json").write_text("{}")
    result = runner.invoke(app, ["redrive", "b2", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to redrive" in result.output


def test_redrive_of_an_unknown_batch_fails_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["redrive", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "no report" in result.output


def test_redrive_upload_needs_a_bucket(tmp_path: Path) -> None:
    assert runner.invoke(app, ["redrive", "b", "--upload"]).exit_code == 2


def test_redrive_reads_the_bucket_and_uploads_the_manifest(
    s3_client: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a finished batch's reports in the data bucket (in-process moto)
    from imagebatch.aws.clients import reset_clients

    reset_clients()
    monkeypatch.chdir(tmp_path)
    s3_client.put_object(
        Bucket=s3_bucket,
        Key="reports/b3/redrive.jsonl",
        Body="\n".join([HEADER, _item("a-1"), _item("b-1")]).encode(),
    )
    s3_client.put_object(
        Bucket=s3_bucket,
        Key="reports/b3/failed.jsonl",
        Body="\n".join([_failed("a-1", "timeout"), _failed("b-1", "content_filtered")]).encode(),
    )
    try:
        # WHEN redrive runs against the bucket with --upload
        result = runner.invoke(
            app, ["redrive", "b3", "--bucket", s3_bucket, "--class", "timeout", "--upload"]
        )
    finally:
        reset_clients()

    # THEN the manifest of exactly the timed-out image lands under manifests/
    assert result.exit_code == 0, result.output
    body = s3_client.get_object(Bucket=s3_bucket, Key="manifests/redrive-b3.jsonl")["Body"].read()
    lines = body.decode().splitlines()
    assert lines[0] == HEADER and [json.loads(line)["id"] for line in lines[1:]] == ["a-1"]
    assert (tmp_path / "redrive-b3.jsonl").read_bytes() == body
