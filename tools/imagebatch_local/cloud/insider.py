"""An insider: a principal of the same account that is not the stack's, with broad grants.

The threat the stack is built against (README, "Security model"): other teams' and broad
developer roles in the account, allowed s3:PutObject/GetObject, sns:Publish,
sqs:SendMessage, events:PutEvents and execute-api:Invoke on "*". The local AWS gives tests
(and `imagebatch local run --as-insider`) such a principal: an IAM role created in moto, whose
calls the local IAM check decides as it decides the stack's, identity policy and resource
policies together. Its denials are expected, so they do not fail a run
(IamEnforcer.outsider_denials keeps them).
"""

from __future__ import annotations

import json
from typing import Any

from imagebatch_local.cloud.iam_policies import Role, Statement

#: The insider's identity in the local IAM check (lambda_runtime.acting_as, bind_identity).
INSIDER = "Insider"
#: Not named after the stack: a condition on the stack's name must not let it in.
INSIDER_ROLE_NAME = "broad-developer"
#: The insider's credentials at the local query API (local_up.py), which knows each signer by
#: its access key as API Gateway's IAM authorization does. Not secrets: local only.
INSIDER_ACCESS_KEY = "insider"
INSIDER_SECRET_KEY = "insider"  # noqa: S105 - a local fake key, as stack_descriptor's
INSIDER_ACTIONS = (
    "s3:PutObject",
    "s3:GetObject",
    "sns:Publish",
    "sqs:SendMessage",
    "events:PutEvents",
    "execute-api:Invoke",
)


def insider_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(INSIDER_ACTIONS), "Resource": "*"}],
    }


def insider_role() -> Role:
    """The insider's role as the local IAM check holds it (no template line: line 0)."""
    statements = tuple(Statement.parse(s, 0, "insider") for s in insider_policy()["Statement"])
    return Role(INSIDER, INSIDER_ROLE_NAME, "insider-session", statements)


def create_insider_role(iam: Any) -> str:
    """The insider's role in the local AWS's IAM (moto), with the same policy; its ARN."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    arn: str = iam.create_role(
        RoleName=INSIDER_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    iam.put_role_policy(
        RoleName=INSIDER_ROLE_NAME,
        PolicyName="broad-account-access",
        PolicyDocument=json.dumps(insider_policy()),
    )
    return arn
