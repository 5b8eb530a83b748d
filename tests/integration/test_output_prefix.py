"""A manifest's output_prefix must be somewhere the roles that write images may write.

GenerateChunk (Bedrock) and the SageMaker container put each image at
<output_prefix><batch-id>/<image-id>.png; their roles grant s3:PutObject under outputs/ only.
A prefix elsewhere passed validation and ingest, then every image failed with AccessDenied on
AWS (moto checks no policy). Validation confines the prefix to outputs/, naming the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from imagebatch_local.cloud.local_stack import LocalStack
from imagebatch_local.template import load_template

from imagebatch.aws.s3_store import image_key
from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import validate_manifest_file
from imagebatch.models.bedrock_models import load_catalogue

# an ECR image URI: the template reads the repository of its ECR grant from it
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imagebatch:1"

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
IMAGE_WRITERS = ("GenerateChunkFunction", "SageMakerExecutionRole")


def _manifest(tmp_path: Path, prefix: str) -> Path:
    path = tmp_path / "m.jsonl"
    header = {"batch": {"backend": "bedrock", "output_prefix": prefix}}
    item = {"id": "mug", "prompt": "a mug"}
    path.write_text(f"{json.dumps(header)}\n{json.dumps(item)}\n", encoding="utf-8")
    return path


def _put_object_patterns() -> dict[str, list[str]]:
    """s3:PutObject resources of each role that writes images, resolved, with the SageMaker
    backend on."""
    stack = LocalStack("imagebatch", TEMPLATE_PATH.parent, load_template(TEMPLATE_PATH))
    stack.parameter_defaults({"EnableSageMaker": "true", "SageMakerImageUri": IMAGE})
    for logical_id, resource in stack.resources.items():
        name = f"imagebatch-{logical_id}".lower()
        if resource["Type"] == "AWS::S3::Bucket":
            name = str(stack.resolve(resource["Properties"].get("BucketName")) or name)
        stack.physical[logical_id] = name
        stack.arns[logical_id] = f"arn:aws:s3:::{name}" if "S3" in resource["Type"] else name
        if resource["Type"] == "AWS::Bedrock::ApplicationInferenceProfile":
            stack.attributes[(logical_id, "InferenceProfileArn")] = name
    patterns: dict[str, list[str]] = {}
    for writer in IMAGE_WRITERS:
        props = stack.resolve(stack.template["Resources"][writer]["Properties"])
        text = json.dumps(props.get("Policies", props))
        document: Any = json.loads(text)
        found: list[str] = []
        _collect_puts(document, found)
        patterns[writer] = found
    return patterns


def _collect_puts(node: Any, found: list[str]) -> None:
    if isinstance(node, dict):
        actions = node.get("Action")
        actions = actions if isinstance(actions, list) else [actions]
        if node.get("Effect") == "Allow" and "s3:PutObject" in actions:
            resources = node["Resource"]
            found.extend(resources if isinstance(resources, list) else [resources])
        for value in node.values():
            _collect_puts(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect_puts(value, found)


def _matches(pattern: str, arn: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, arn) is not None


@pytest.mark.parametrize("prefix", ["runs/2026/", "reports/", "catalogs/x/latest/", "manifests/"])
def test_a_prefix_outside_outputs_is_refused_naming_line_and_field(
    tmp_path: Path, prefix: str
) -> None:
    # GIVEN a manifest whose header puts images outside outputs/
    manifest = _manifest(tmp_path, prefix)

    # WHEN it is validated (imagebatch validate and ingest read it the same way)
    with pytest.raises(ManifestError) as caught:
        validate_manifest_file(manifest, load_catalogue())

    # THEN the header is refused, naming line 1, the field and where images may go
    assert caught.value.line == 1
    assert caught.value.field == "batch.output_prefix"
    assert "outputs/" in str(caught.value)


@pytest.mark.parametrize("prefix", ["outputs/", "outputs/runs/2026/", "outputs/a.b_c-d/x/"])
def test_every_accepted_prefix_is_writable_by_the_roles_that_write_images(
    tmp_path: Path, prefix: str
) -> None:
    # GIVEN a prefix validation accepts
    settings, _, errors = validate_manifest_file(_manifest(tmp_path, prefix), load_catalogue())
    assert not errors and settings.output_prefix == prefix

    # THEN every role that writes images may put an image there
    for writer, patterns in _put_object_patterns().items():
        bucket_arn = next(p.split("/", 1)[0] for p in patterns if "/" in p)
        arn = f"{bucket_arn}/{image_key(prefix, 'batch-1', 'mug-1')}"
        assert any(_matches(p, arn) for p in patterns), f"{writer} may not write {arn}"
