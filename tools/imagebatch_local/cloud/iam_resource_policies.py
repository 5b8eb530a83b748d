"""The resource policies of template.yaml, and how AWS combines them with a caller's role.

A bucket policy (AWS::S3::BucketPolicy), topic policy (AWS::SNS::TopicPolicy) or queue
policy (AWS::SQS::QueuePolicy) is attached to resources; each statement also names whom it
is about (Principal). For a request within one account, AWS evaluates the caller's identity
policy and every resource policy of the resource together: an explicit Deny in any of them
wins; otherwise an Allow in either the identity policy or a resource policy suffices (IAM
user guide, "Policy evaluation for requests within a single account"). A resource policy
that names the account (its root ARN or id) rather than the role delegates to the account's
identity policies: its Allow alone grants nothing to a role, its Deny applies to all of
them. An AWS service principal (sns.amazonaws.com delivering to a queue) has no identity
policy: only a resource policy can allow it.

NotPrincipal is refused (PolicyError): the template does not use it, and its rules for
assumed-role sessions are easy to get wrong.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from imagebatch_local.cloud.iam_policies import (
    ContextValues,
    Decision,
    PolicyError,
    Role,
    Statement,
    _glob,
    _line,
)

if TYPE_CHECKING:
    from imagebatch_local.cloud.local_stack import LocalStack

#: A principal as a policy names it: ("AWS", arn or account), ("Service", name), ("*", "*").
Principal = tuple[str, str]


@dataclass(frozen=True)
class Caller:
    """Who makes a request: a role of the account (`role_arn`), or an AWS service."""

    account: str
    role_arn: str | None = None
    service: str | None = None

    def names(self, principal: Principal) -> Literal["caller", "account"] | None:
        """Whether a policy's principal is this caller ("caller"), every principal of its
        account ("account"), or someone else (None)."""
        kind, value = principal
        if kind == "*" or (kind == "AWS" and value == "*"):
            return "caller"
        if kind == "Service":
            return "caller" if self.service is not None and value == self.service else None
        if kind != "AWS" or self.role_arn is None:
            return None
        if value in {self.account, f"arn:aws:iam::{self.account}:root"}:
            return "account"
        return "caller" if value == self.role_arn else None


@dataclass(frozen=True)
class ResourceStatement:
    statement: Statement
    principals: tuple[Principal, ...]

    @classmethod
    def parse(cls, document: Mapping[str, Any], line: int, origin: str) -> ResourceStatement:
        if "NotPrincipal" in document:
            raise PolicyError(f"line {line}: NotPrincipal is not evaluated locally")
        if "Principal" not in document:
            raise PolicyError(f"line {line}: a resource policy statement names a Principal")
        return cls(Statement.parse(document, line, origin), _principals(document["Principal"]))


def _principals(value: Any) -> tuple[Principal, ...]:
    if value == "*":
        return (("*", "*"),)
    if not isinstance(value, Mapping):
        raise PolicyError(f"a Principal is '*' or a map, not {value!r}")
    found: list[Principal] = []
    for kind, names in value.items():
        if kind not in {"AWS", "Service"}:
            raise PolicyError(f"Principal {kind} is not evaluated locally")
        for name in names if isinstance(names, list) else [names]:
            found.append((str(kind), str(name)))
    return tuple(found)


@dataclass(frozen=True)
class ResourcePolicy:
    """One policy resource of the template: the ARNs it is attached to, its statements."""

    owner: str
    kind: str
    attached: tuple[str, ...]
    statements: tuple[ResourceStatement, ...]

    def applies_to(self, resource: str) -> bool:
        return any(_glob(pattern).fullmatch(resource) for pattern in self.attached)

    def effects(
        self, caller: Caller, action: str, resource: str, context: ContextValues
    ) -> Iterator[tuple[str, Literal["caller", "account"]]]:
        """(effect, whom it names) of every statement that matches the request."""
        for entry in self.statements:
            named = {caller.names(p) for p in entry.principals}
            whom: Literal["caller", "account"]
            if "caller" in named:
                whom = "caller"
            elif "account" in named:
                whom = "account"
            else:
                continue
            if entry.statement.matching(action, resource, context) is not None:
                yield entry.statement.effect, whom


@dataclass(frozen=True)
class Verdict:
    """What the resource policies of one resource say about one request."""

    deny: bool = False
    allow: bool = False


def resource_verdict(
    policies: tuple[ResourcePolicy, ...],
    caller: Caller,
    action: str,
    resource: str,
    context: ContextValues,
) -> Verdict:
    deny = allow = False
    for policy in policies:
        if not policy.applies_to(resource):
            continue
        for effect, whom in policy.effects(caller, action, resource, context):
            if effect == "Deny":
                deny = True
            elif whom == "caller":
                allow = True  # an Allow naming only the account delegates to identity policies
    return Verdict(deny=deny, allow=allow)


def combine(identity: Decision | None, verdict: Verdict) -> Decision:
    """A same-account request: an explicit Deny anywhere wins, else an Allow anywhere.
    `identity` None: a service principal, which has no identity policy."""
    if identity is not None and identity.explicit_deny:
        return identity
    if verdict.deny:
        return Decision(allowed=False, explicit_deny=True, resource_deny=True)
    if identity is not None and identity.allowed:
        return identity
    return Decision(allowed=verdict.allow, explicit_deny=False, by_resource_policy=verdict.allow)


def decide(
    role: Role,
    action: str,
    resource: str,
    context: ContextValues,
    *,
    account: str,
    policies: tuple[ResourcePolicy, ...],
) -> Decision:
    """`role`'s request decided as AWS decides it: its identity policy, then the resource
    policies, with the global condition keys of a role's request added to the context."""
    caller = Caller(account, role_arn=role.principal_arn(account))
    full = request_context(context, caller)
    return combine(
        role.decide(action, resource, full),
        resource_verdict(policies, caller, action, resource, full),
    )


def request_context(context: ContextValues, caller: Caller) -> dict[str, str | list[str]]:
    """The global condition keys AWS adds to every request. aws:SecureTransport is true: the
    SDKs speak HTTPS to AWS (the local AWS's plain HTTP is not what a policy should see)."""
    full: dict[str, str | list[str]] = {"aws:SecureTransport": "true", **context}
    full["aws:PrincipalAccount"] = caller.account
    if caller.role_arn is not None:
        full["aws:PrincipalArn"] = caller.role_arn
        full["aws:PrincipalType"] = "AssumedRole"
    if caller.service is not None:
        full["aws:PrincipalServiceName"] = caller.service
    return full


# --- from the template ----------------------------------------------------------------------


def _s3_arns(stack: LocalStack, props: Mapping[str, Any]) -> tuple[str, ...]:
    bucket = str(stack.resolve(props["Bucket"]))
    return (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*")


def _topic_arns(stack: LocalStack, props: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(t) for t in stack.resolve(props["Topics"]))


def _queue_arns(stack: LocalStack, props: Mapping[str, Any]) -> tuple[str, ...]:
    arns = []
    for url in stack.resolve(props["Queues"]):
        account, name = urlsplit(str(url)).path.strip("/").split("/")[-2:]
        arns.append(f"arn:aws:sqs:{stack.region}:{account}:{name}")
    return tuple(arns)


_ATTACHED = {
    "AWS::S3::BucketPolicy": _s3_arns,
    "AWS::SNS::TopicPolicy": _topic_arns,
    "AWS::SQS::QueuePolicy": _queue_arns,
}


def stack_resource_policies(stack: LocalStack) -> tuple[ResourcePolicy, ...]:
    """Every bucket, topic and queue policy the stack deploys (of_type leaves out a resource
    whose Condition is false here)."""
    policies = []
    for kind, attached in _ATTACHED.items():
        for owner, resource in stack.of_type(kind).items():
            props = resource["Properties"]
            statements = props["PolicyDocument"]["Statement"]
            parsed = []
            for node in statements if isinstance(statements, list) else [statements]:
                resolved = stack.resolve(node)
                if isinstance(resolved, Mapping):  # an !If that is AWS::NoValue here
                    parsed.append(ResourceStatement.parse(resolved, _line(node), owner))
            policies.append(ResourcePolicy(owner, kind, attached(stack, props), tuple(parsed)))
    return tuple(policies)
