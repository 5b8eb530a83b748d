"""Step Functions: starting a batch's execution and answering a chunk's task token."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from imagebatch.errors import RestartLimitError

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

logger = Logger(child=True)

# The token's execution has moved on (timed out, retried, stopped): nothing to answer.
_GONE_TOKEN_CODES = {"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"}


# A batch's execution is named after it; a batch whose execution ended without finishing the
# batch (finalize failed, the execution was stopped or timed out) is restarted under the next
# free name <batch-id>-r<n>. Chunks skip the images the ledger already holds, so a restart
# makes and charges only what is missing.
MAX_RESTARTS = 9
_ENDED_UNFINISHED = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})


class StepFunctionsStarter:
    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._sfn = client
        self._arn = state_machine_arn

    def execution_arn(self, name: str) -> str:
        prefix, _, machine = self._arn.rpartition(":stateMachine:")
        return f"{prefix}:execution:{machine}:{name}"

    def start(self, batch_id: str, execution_input: dict[str, Any]) -> str:
        """Start the batch's execution unless one is running or finished it; returns the name
        of the execution that now carries the batch."""
        for restart in range(MAX_RESTARTS + 1):
            name = batch_id if restart == 0 else f"{batch_id}-r{restart}"
            try:
                self._sfn.start_execution(
                    stateMachineArn=self._arn, name=name, input=json.dumps(execution_input)
                )
            except ClientError as exc:
                # The execution name is the batch id: it exists means already started.
                if exc.response["Error"]["Code"] != "ExecutionAlreadyExists":
                    raise
                status = self._sfn.describe_execution(executionArn=self.execution_arn(name))[
                    "status"
                ]
                if status not in _ENDED_UNFINISHED:
                    logger.info(
                        "execution already exists", extra={"execution": name, "status": status}
                    )
                    return name
                continue
            if restart:
                logger.warning("batch execution restarted", extra={"execution": name})
            return name
        raise RestartLimitError(f"batch {batch_id} was restarted {MAX_RESTARTS} times; not again")


class TaskTokens:
    """Answers `waitForTaskToken` tasks; a token whose execution moved on is not an error."""

    def __init__(self, client: SFNClient) -> None:
        self._sfn = client

    def succeed(self, token: str, output: str) -> bool:
        return self._answer("send_task_success", taskToken=token, output=output)

    def fail(self, token: str, error: str, cause: str) -> bool:
        return self._answer("send_task_failure", taskToken=token, error=error, cause=cause)

    def _answer(self, call: str, **kwargs: Any) -> bool:
        try:
            getattr(self._sfn, call)(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in _GONE_TOKEN_CODES:
                logger.warning("task token no longer waits", extra={"code": exc.response["Error"]})
                return False
            raise
        return True
