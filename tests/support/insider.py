"""The insider of the local AWS as a fixture: a principal of the account that is not the
stack's, allowed s3:PutObject/GetObject, sns:Publish, sqs:SendMessage, events:PutEvents and
execute-api:Invoke on "*" (tools/imagebatch_local/cloud/insider.py). Its calls go through the
same IAM check as the stack's; what it was refused is in `refused()`.

A test module that has an `aws` fixture (a running LocalAws) imports `insider_fixture`: the
fixture is named `insider`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError
from imagebatch_local.cloud.iam_enforcer import Denial
from imagebatch_local.cloud.session import LocalAws


@dataclass
class Insider:
    aws: LocalAws

    def client(self, service: str) -> Any:
        return self.aws.insider_client(service)

    def put(self, key: str, body: bytes = b"forged", **extra: Any) -> None:
        self.client("s3").put_object(Bucket=self.aws.bucket, Key=key, Body=body, **extra)

    def publish(self, topic_arn: str, message: dict[str, Any]) -> None:
        self.client("sns").publish(TopicArn=topic_arn, Message=json.dumps(message))

    def send(self, queue_url: str, body: str) -> None:
        self.client("sqs").send_message(QueueUrl=queue_url, MessageBody=body)

    def refused(self) -> list[Denial]:
        return list(self.aws.iam.outsider_denials)


def denied(call: Any, *args: Any, **kwargs: Any) -> str:
    """The error code the call was refused with; fails the test if it was not refused."""
    with pytest.raises(ClientError) as refused:
        call(*args, **kwargs)
    code: str = refused.value.response["Error"]["Code"]
    return code


@pytest.fixture(name="insider")
def insider_fixture(aws: LocalAws) -> Insider:
    """The insider of the module's running local AWS (its `aws` fixture)."""
    return Insider(aws)
