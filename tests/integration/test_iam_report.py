"""The unused-permission report: grants no local run used, and whether the template says why."""

from __future__ import annotations

import json
from pathlib import Path

from imagebatch_local.cloud.iam_report import comment_above, main, unused_grants

TEMPLATE = """\
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - Statement:
            - Effect: Allow
              Action: s3:GetObject
              Resource: arn:aws:s3:::b/chunks/*
            # Unused locally: only a retried chunk reads it.
            - Effect: Allow
              Action: s3:PutObject
              Resource: arn:aws:s3:::b/chunks/*.pending.json
            - Effect: Allow
              Action: s3:DeleteObject
              Resource: arn:aws:s3:::b/chunks/*.pending.json
      Events:
        Nightly:
          Type: ScheduleV2
          Properties:
            # Unused locally: the Scheduler sends here after its retries.
            DeadLetterConfig:
              Type: SQS
"""


def _grant(line: int, action: str, resource: str) -> dict[str, object]:
    return {"role": "Fn", "line": line, "action": action, "resource": resource, "origin": "inline"}


def _usage(directory: Path, name: str, region: str, *, read_chunk: bool) -> None:
    bucket = f"arn:aws:s3:::b-{region}"
    grants = [
        _grant(7, "s3:GetObject", f"{bucket}/chunks/*"),
        _grant(11, "s3:PutObject", f"{bucket}/chunks/*.pending.json"),
        _grant(14, "s3:DeleteObject", f"{bucket}/chunks/*.pending.json"),
        _grant(23, "sqs:SendMessage", f"arn:aws:sqs:{region}:1:dlq"),
    ]
    usage = {
        "grants": grants,
        "role_lines": {"Fn": 3},
        "used": [f"Fn|7|s3:GetObject|{bucket}/chunks/*"] if read_chunk else [],
    }
    (directory / f"usage-{name}.json").write_text(json.dumps(usage), encoding="utf-8")


def test_unused_grants_are_listed_once_across_regions_with_their_explanation(
    tmp_path: Path,
) -> None:
    # GIVEN two runs in two regions, the first of which read a chunk
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE, encoding="utf-8")
    _usage(tmp_path, "a", "us-east-1", read_chunk=True)
    _usage(tmp_path, "b", "us-west-2", read_chunk=False)

    # WHEN the report is made
    unused = unused_grants(tmp_path, template)

    # THEN what some run used is not listed, each unused grant once, explained or not
    listed = {(g.action, g.explained) for g in unused}
    assert listed == {
        ("s3:PutObject", True),
        ("s3:DeleteObject", False),
        ("sqs:SendMessage", True),
    }
    assert main([str(tmp_path), "--template", str(template)]) == 1


def test_a_comment_above_the_mapping_key_explains_its_first_line() -> None:
    lines = TEMPLATE.splitlines()
    assert "retried chunk" in comment_above(lines, 11)
    assert comment_above(lines, 14) == ""
    # `Type: SQS` is the first key under DeadLetterConfig: the comment above that counts
    assert "after its retries" in comment_above(lines, 23)


def test_no_usage_files_is_an_error_not_a_clean_report(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 2
