"""Which deployed stack a command talks to, and its outputs.

`--stack NAME` (or IMAGEBATCH_STACK) names it; `submit` and `watch` fall back to the
stack_name `sam deploy` uses, from the application's samconfig.toml
([default.global.parameters] or [default.deploy.parameters]), and every command to its region
when neither --region nor the AWS environment gives one. Its outputs (DataBucketName,
LedgerTableName, QueryApiUrl) come from CloudFormation DescribeStacks
(imagebatch.aws.deployed), so nothing is copied by hand. `--stack local` is the stack
`imagebatch local up` serves: its outputs come from the descriptor it writes instead
(imagebatch_local/stack_descriptor.py), so a deployed stack named "local" is reached through
samconfig.toml, not --stack.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imagebatch_cli.exit_codes import fail

if TYPE_CHECKING:
    from imagebatch.aws.deployed import StackOutputs
    from imagebatch.aws.ledger import Ledger
    from imagebatch.aws.session import AwsSession

StackOption = Annotated[
    str | None,
    typer.Option(
        envvar="IMAGEBATCH_STACK",
        show_default=False,
        help="A deployed imagebatch stack: its bucket, ledger table and query API are read "
        "from its CloudFormation outputs. 'local': the stack `imagebatch local up` serves.",
    ),
]


@dataclass(frozen=True)
class SamConfig:
    stack_name: str | None = None
    region: str | None = None


def read_samconfig(path: Path | None = None) -> SamConfig:
    """stack_name and region from samconfig.toml's `default` environment (none: empty)."""
    if path is None:
        from imagebatch_cli.project import ProjectFilesNotFound, project_root

        try:
            path = project_root() / "samconfig.toml"
        except ProjectFilesNotFound:
            return SamConfig()
    if not path.is_file():
        return SamConfig()
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        fail(f"{path}: not valid TOML: {exc}")
    default: dict[str, Any] = config.get("default", {})
    found: dict[str, str] = {}
    for command in ("global", "deploy"):
        for key, value in default.get(command, {}).get("parameters", {}).items():
            if key in {"stack_name", "region"} and isinstance(value, str):
                found.setdefault(key, value)
    return SamConfig(stack_name=found.get("stack_name"), region=found.get("region"))


@dataclass(frozen=True)
class DeployedStack:
    session: AwsSession
    outputs: StackOutputs

    def ledger(self) -> Ledger:
        """The stack's ledger table; its image index is what ingest reads to leave images
        already made out of a batch's estimate (validate, estimate and submit read it too)."""
        from imagebatch.aws.ledger import Ledger

        return Ledger(self.session.dynamodb(), self.outputs.ledger_table)


def deployed_stack(stack: str | None, *, use_samconfig: bool = True) -> DeployedStack:
    """The stack named (or samconfig.toml's) and its outputs; a clear error otherwise."""
    from imagebatch_local.stack_descriptor import LOCAL_STACK_NAME

    from imagebatch.aws.deployed import read_stack_outputs
    from imagebatch_cli.settings import aws_session

    if stack == LOCAL_STACK_NAME:
        return local_stack()
    config = read_samconfig()
    name = stack or (config.stack_name if use_samconfig else None)
    if not name:
        fail("name a deployed stack: --stack NAME (or IMAGEBATCH_STACK, or samconfig.toml)")
    session = aws_session(default_region=config.region)
    outputs = read_stack_outputs(session.cloudformation(), name, session.region)
    return DeployedStack(session, outputs)


def local_stack() -> DeployedStack:
    """The stack `imagebatch local up` serves, from the descriptor it wrote (its run
    directory: IMAGEBATCH_RUN_DIR, else ~/.imagebatch): a session on its endpoint with its
    fake credentials, and its outputs as a deployed stack's."""
    from imagebatch_local.stack_descriptor import LocalStackDescriptorError, read_descriptor

    from imagebatch.aws.deployed import StackOutputs
    from imagebatch.aws.session import AwsSession

    try:
        described = read_descriptor()
    except LocalStackDescriptorError as exc:
        fail(exc)
    session = AwsSession(
        region=described.region,
        endpoint_url=described.endpoint_url,
        access_key=(described.access_key_id, described.secret_access_key),
    )
    outputs = StackOutputs(
        stack_name=described.stack_name,
        region=described.region,
        data_bucket=described.data_bucket,
        ledger_table=described.ledger_table,
        query_api_url=described.query_api_url,
        state_machine_arn=described.state_machine_arn,
        ingest_failure_queue_url=described.ingest_failure_queue_url,
        ingest_function_name=described.ingest_function_name,
        parameters=described.parameters,
    )
    return DeployedStack(session, outputs)
