"""template.yaml as CloudFormation will receive it: the SAM transform, run offline.

`cfn-lint template.yaml` lints the SAM template before the transform; what CloudFormation
deploys is the transform's output (roles, permissions, event source mappings, the S3
notification and its DependsOn). Linting that output finds what only exists after it, such
as a dependency cycle between the bucket's notification and a function's policy (E3004).

CodeUri/ContentUri/DefinitionUri become S3 URIs, as after `sam package`; managed policy names
resolve to their ARNs without calling IAM; pseudo parameters use the region samconfig.toml
deploys to. Run it with the SAM CLI's venv (it has aws-sam-translator):

    .venv-sam/bin/python tools/sam_transform.py template.yaml .aws-sam/transformed.json
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

# The AWS managed policies SAM attaches to the roles it creates (basic execution, X-Ray).
MANAGED_POLICIES = {
    name: f"arn:aws:iam::aws:policy/{path}{name}"
    for name, path in (
        ("AWSLambdaBasicExecutionRole", "service-role/"),
        ("AWSXrayWriteOnlyAccess", ""),
        ("AWSXRayDaemonWriteAccess", ""),
    )
}
PACKAGED_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")


class OfflinePolicyLoader:
    """samtranslator's ManagedPolicyLoader interface, answered without IAM."""

    def load(self) -> dict[str, str]:
        return dict(MANAGED_POLICIES)


def as_packaged(template: dict[str, Any]) -> dict[str, Any]:
    """Local code locations replaced by S3 URIs, as `sam package` leaves them."""
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        for key in PACKAGED_PROPERTIES:
            location = properties.get(key)
            if isinstance(location, str) and not location.startswith("s3://"):
                name = location.strip("/").replace("/", "-") or "root"
                properties[key] = f"s3://sam-packaged-artifacts/{name}.zip"
    return template


def deploy_region(samconfig: Path) -> str | None:
    if not samconfig.is_file():
        return None
    config = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    region = config.get("default", {}).get("deploy", {}).get("parameters", {}).get("region")
    return str(region) if region else None


def main(source: Path, target: Path) -> None:
    region = deploy_region(source.parent / "samconfig.toml")
    if region and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_DEFAULT_REGION"] = region
    template = as_packaged(yaml_parse(source.read_text(encoding="utf-8")))
    transformed = transform(template, {}, OfflinePolicyLoader())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(transformed, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: sam_transform.py TEMPLATE OUTPUT")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
