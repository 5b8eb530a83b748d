"""Step Functions: starting a batch's execution and answering a chunk's task token."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

logger = Logger(child=True)

# The token's execution has moved on (timed out, retried, stopped): nothing to answer.
_GONE_TOKEN_CODES = {"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"}


class StepFunctionsStarter:
    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._sfn = client
        self._arn = state_machine_arn

    def start(self, batch_id: str, execution_input: dict[str, Any]) -> None:
        try:
            self._sfn.start_execution(
                stateMachineArn=self._arn, name=batch_id, input=json.dumps(execution_input)
            )
        except ClientError as exc:
            # The execution name is the batch id: it already exists means already started.
            if exc.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
            logger.info("execution already exists", extra={"batch_id": batch_id})


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
