"""A deployed imagebatch stack as the CLI uses it: its outputs (CloudFormation DescribeStacks),
its data bucket (upload a manifest, read a batch's reports) and its ledger table.

Every call runs under session.aws_errors, so a missing stack, a refused request or an
unreachable endpoint is one AwsAccessError or StackOutputsError with what to do about it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from imagebatch.aws.s3_store import report_key
from imagebatch.aws.session import aws_errors
from imagebatch.errors import StackOutputsError
from imagebatch.models.records import batch_id_for

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_s3 import S3Client

# template.yaml's Outputs the CLI reads, by output key.
OUTPUT_KEYS = {
    "data_bucket": "DataBucketName",
    "ledger_table": "LedgerTableName",
    "query_api_url": "QueryApiUrl",
    "state_machine_arn": "BatchStateMachineArn",
    "model_compile_role_arn": "ModelCompileRoleArn",
    "ingest_failure_queue_url": "IngestFailureQueueUrl",
    "ingest_function_name": "IngestFunctionName",
}
# Outputs a stack deployed by an older template may lack; the commands that need them say so.
OPTIONAL_OUTPUTS = frozenset(
    {
        "BatchStateMachineArn",
        "ModelCompileRoleArn",
        "IngestFailureQueueUrl",
        "IngestFunctionName",
    }
)


class StackOutputs(BaseModel):
    model_config = ConfigDict(frozen=True)
    stack_name: str
    region: str
    data_bucket: str
    ledger_table: str
    query_api_url: str
    state_machine_arn: str | None = None
    model_compile_role_arn: str | None = None
    ingest_failure_queue_url: str | None = None
    ingest_function_name: str | None = None
    # The template parameters the stack was deployed with (what `submit` validates against).
    parameters: dict[str, str] = {}


def read_stack_outputs(cfn: CloudFormationClient, stack_name: str, region: str) -> StackOutputs:
    """The stack's outputs by DescribeStacks; a stack that does not exist, is not finished
    creating, or lacks an output the CLI needs is a StackOutputsError naming it."""
    with aws_errors(f"reading stack {stack_name}"):
        try:
            stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
        except cfn.exceptions.ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "")
            if "does not exist" in message:
                raise StackOutputsError(
                    f"no stack {stack_name!r} in {region}: deploy it (`sam deploy --guided`) "
                    "or name yours with --stack (or in samconfig.toml)"
                ) from exc
            raise
    if not stacks:
        raise StackOutputsError(f"no stack {stack_name!r} in {region}")
    stack = stacks[0]
    status = stack.get("StackStatus", "")
    outputs = {o.get("OutputKey", ""): o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    missing = [key for key in OUTPUT_KEYS.values() if key not in OPTIONAL_OUTPUTS]
    missing = [key for key in missing if not outputs.get(key)]
    if missing:
        raise StackOutputsError(
            f"stack {stack_name!r} ({status}) has no output {', '.join(missing)}: is it an "
            "imagebatch stack, and finished deploying?"
        )
    parameters = {
        p.get("ParameterKey", ""): p.get("ParameterValue", "") for p in stack.get("Parameters", [])
    }
    return StackOutputs(
        stack_name=stack_name,
        region=region,
        parameters=parameters,
        **{field: outputs.get(key) for field, key in OUTPUT_KEYS.items()},
    )


class DataBucket:
    """The stack's data bucket, for the few things a person does with it from the CLI."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def upload_manifest(self, path: Path, key: str | None = None) -> tuple[str, str]:
        """Put a manifest under manifests/ (which starts ingest); returns (key, batch id)."""
        key = key or f"manifests/{path.name}"
        body = path.read_bytes()
        with aws_errors(f"uploading {path.name} to s3://{self.bucket}/{key}"):
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        # ingest names the batch by the content it reads, not the ETag
        return key, batch_id_for(self.bucket, key, hashlib.sha256(body).hexdigest())

    def report_lines(self, batch_id: str, name: str) -> list[str] | None:
        """reports/<batch-id>/<name> as lines; None when it is not there."""
        with aws_errors(f"reading s3://{self.bucket}/{report_key(batch_id, name)}"):
            try:
                got = self._s3.get_object(Bucket=self.bucket, Key=report_key(batch_id, name))
            except self._s3.exceptions.NoSuchKey:
                return None
            body: bytes = got["Body"].read()
        return body.decode("utf-8").splitlines()

    def has_report(self, batch_id: str, name: str) -> bool:
        with aws_errors(f"reading s3://{self.bucket}/reports/{batch_id}/"):
            listing = self._s3.list_objects_v2(
                Bucket=self.bucket, Prefix=report_key(batch_id, name), MaxKeys=1
            )
        return bool(listing.get("KeyCount"))
