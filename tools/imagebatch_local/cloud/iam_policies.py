"""The IAM roles of template.yaml, expanded as SAM expands them, and how a policy decides.

SAM turns a function's or state machine's `Policies` into a role: each inline statement,
each policy template (expanded from samtranslator's policy_templates.json), plus the AWS
managed policies it attaches by itself (AWSLambdaBasicExecutionRole for every function,
AWSXrayWriteOnlyAccess with tracing, AWSLambdaSQSQueueExecutionRole with an SQS event), and a
role of its own for each ScheduleV2 event. `tests/unit/test_iam_expansion.py` checks this
expansion against aws-sam-translator's output for the same template.

A request is decided as IAM decides an identity-based policy in one account: an explicit
Deny wins, else some Allow statement must match the action (Action/NotAction, `*` and `?`
wildcards, case-insensitive), the resource ARN (Resource/NotResource, case-sensitive) and
its Condition block; otherwise it is denied implicitly. Resource-based policies are combined
with it in iam_resource_policies.py; permission boundaries, SCPs and session policies are not
modelled (docs/local-aws.md).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from imagebatch_local.cloud.local_stack import LocalStack

#: Request context keys: a value, or several (multivalued keys).
ContextValues = Mapping[str, str | list[str]]

#: The statements of the AWS managed policies SAM attaches by itself, from the AWS managed
#: policy reference (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/<name>.html).
_LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
MANAGED_POLICIES: dict[str, tuple[str, ...]] = {
    "AWSLambdaBasicExecutionRole": _LOGS,
    "AWSXrayWriteOnlyAccess": (
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:GetSamplingStatisticSummaries",
    ),
    "AWSLambdaSQSQueueExecutionRole": (
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        *_LOGS,
    ),
}
_MANAGED_PATHS = {
    "AWSLambdaBasicExecutionRole": "service-role/",
    "AWSLambdaSQSQueueExecutionRole": "service-role/",
    "AWSXrayWriteOnlyAccess": "",
}

#: SAM policy templates this template uses, as samtranslator's policy_templates.json
#: defines them (the expansion test compares against the installed translator).
SAM_POLICY_TEMPLATES: dict[str, dict[str, Any]] = {
    "LambdaInvokePolicy": {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["lambda:InvokeFunction"],
                "Resource": {
                    "Fn::Sub": [
                        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:"
                        "function:${functionName}*",
                        {"functionName": {"Ref": "FunctionName"}},
                    ]
                },
            }
        ]
    },
}


class PolicyError(Exception):
    """A policy the local AWS cannot evaluate faithfully: it refuses rather than guesses."""


@dataclass(frozen=True)
class Grant:
    """One action pattern on one resource pattern of an Allow statement: the unit that the
    unused-permission report counts. `line` is the template line that grants it."""

    role: str
    line: int
    action: str
    resource: str
    origin: str

    def key(self) -> str:
        return f"{self.role}|{self.line}|{self.action}|{self.resource}"


@dataclass(frozen=True)
class Statement:
    effect: Literal["Allow", "Deny"]
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    resources: tuple[str, ...]
    not_resources: tuple[str, ...]
    condition: Mapping[str, Mapping[str, Any]]
    line: int
    origin: str

    @classmethod
    def parse(cls, document: Mapping[str, Any], line: int, origin: str) -> Statement:
        effect = document.get("Effect")
        if effect not in {"Allow", "Deny"}:
            raise PolicyError(f"line {line}: Effect must be Allow or Deny, not {effect!r}")
        statement = cls(
            effect=effect,
            actions=_strings(document.get("Action")),
            not_actions=_strings(document.get("NotAction")),
            resources=_strings(document.get("Resource")),
            not_resources=_strings(document.get("NotResource")),
            condition=dict(document.get("Condition", {})),
            line=line,
            origin=origin,
        )
        if bool(statement.actions) == bool(statement.not_actions):
            raise PolicyError(f"line {line}: a statement has Action or NotAction, not both")
        if bool(statement.resources) == bool(statement.not_resources):
            raise PolicyError(f"line {line}: a statement has Resource or NotResource")
        for pattern in (*statement.resources, *statement.not_resources):
            if "${" in pattern:
                raise PolicyError(f"line {line}: unresolved {pattern!r} (policy variables?)")
        return statement

    def matching(
        self, action: str, resource: str, context: ContextValues
    ) -> list[tuple[str, str]] | None:
        """The (action pattern, resource pattern) pairs that match, or None if it does not
        apply (NotAction/NotResource pairs are reported with the request's own values)."""
        if self.actions:
            actions = [a for a in self.actions if _glob(a, ignore_case=True).fullmatch(action)]
        else:
            hit = any(_glob(a, ignore_case=True).fullmatch(action) for a in self.not_actions)
            actions = [] if hit else [f"NotAction:{action}"]
        if self.resources:
            resources = [r for r in self.resources if _glob(r).fullmatch(resource)]
        else:
            hit = any(_glob(r).fullmatch(resource) for r in self.not_resources)
            resources = [] if hit else [f"NotResource:{resource}"]
        if not actions or not resources or not conditions_hold(self.condition, context):
            return None
        return [(a, r) for a in actions for r in resources]

    def grants(self, role: str) -> Iterator[Grant]:
        if self.effect != "Allow":
            return
        for action in self.actions or tuple(f"NotAction:{a}" for a in self.not_actions):
            for resource in self.resources or tuple(f"NotResource:{r}" for r in self.not_resources):
                yield Grant(role, self.line, action, resource, self.origin)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool
    #: The grants that allowed the request (all of them: each counts as used).
    used: tuple[Grant, ...] = ()
    #: The explicit Deny came from a resource policy (AWS words the denial after it).
    resource_deny: bool = False
    #: Allowed by a resource policy alone (the identity policy did not allow it).
    by_resource_policy: bool = False


@dataclass(frozen=True)
class Role:
    """A role of the stack: who owns it (a function, the state machine...), and its policy."""

    owner: str
    name: str
    session: str
    statements: tuple[Statement, ...]
    managed: tuple[str, ...] = ()
    #: The template line of the owning resource (an explanation for a whole role goes there).
    line: int = 0

    def assumed_role_arn(self, account: str) -> str:
        return f"arn:aws:sts::{account}:assumed-role/{self.name}/{self.session}"

    def principal_arn(self, account: str) -> str:
        """The role's ARN: what aws:PrincipalArn is for each of its sessions (no path)."""
        return f"arn:aws:iam::{account}:role/{self.name}"

    def decide(self, action: str, resource: str, context: ContextValues) -> Decision:
        used: list[Grant] = []
        allowed = False
        for statement in self.statements:
            pairs = statement.matching(action, resource, context)
            if pairs is None:
                continue
            if statement.effect == "Deny":
                return Decision(allowed=False, explicit_deny=True)
            allowed = True
            used.extend(Grant(self.owner, statement.line, a, r, statement.origin) for a, r in pairs)
        return Decision(allowed=allowed, explicit_deny=False, used=tuple(used))

    def grants(self) -> Iterator[Grant]:
        for statement in self.statements:
            yield from statement.grants(self.owner)

    def without(self, action: str) -> Role:
        """This role with `action` removed from every Allow statement (to show a denial)."""
        kept: list[Statement] = []
        for statement in self.statements:
            actions = tuple(a for a in statement.actions if a.lower() != action.lower())
            if statement.effect == "Allow" and statement.actions and not actions:
                continue
            kept.append(
                Statement(
                    statement.effect,
                    actions if statement.actions else (),
                    statement.not_actions,
                    statement.resources,
                    statement.not_resources,
                    statement.condition,
                    statement.line,
                    statement.origin,
                )
            )
        return Role(self.owner, self.name, self.session, tuple(kept), self.managed, self.line)


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str):
            raise PolicyError(f"expected strings in a policy, got {item!r}")
    return tuple(values)


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (`/` and `:` included), `?` one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE if ignore_case else 0)


# --- conditions ----------------------------------------------------------------------------

_STRING_OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "StringNotLike"}
_ARN_OPERATORS = {"ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike"}


def conditions_hold(condition: Mapping[str, Mapping[str, Any]], context: ContextValues) -> bool:
    """Every operator of the block holds (AND), each for every key it names (AND), each key
    against any of its values (OR). Only the operators below are known: any other one is a
    PolicyError, not a guess. A key absent from the request makes a positive operator false
    and a negated one (`...Not...`) true, as IAM evaluates it; `...IfExists` makes it true."""
    context_lower = {k.lower(): v for k, v in context.items()}
    for operator, keys in condition.items():
        base, if_exists = operator.removesuffix("IfExists"), operator.endswith("IfExists")
        if base not in _STRING_OPERATORS | _ARN_OPERATORS | {"Bool", "Null"}:
            raise PolicyError(f"condition operator {operator} is not evaluated locally")
        negated = "Not" in base
        for key, expected in keys.items():
            actual = context_lower.get(key.lower())
            if base == "Null":  # "true": the key is absent; "false": it is present
                if _condition_values(expected)[0].lower() != str(actual is None).lower():
                    return False
                continue
            if actual is None:
                if not (if_exists or negated):
                    return False
                continue
            if not _operator_holds(base, _condition_values(expected), _as_list(actual)):
                return False
    return True


def _condition_values(value: Any) -> tuple[str, ...]:
    """A condition's values as IAM compares them: strings (YAML booleans as true/false)."""
    values = value if isinstance(value, list) else [value]
    return tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in values)


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def _operator_holds(base: str, expected: tuple[str, ...], actual: list[str]) -> bool:
    negated = "Not" in base
    if base in {"StringLike", "StringNotLike", "ArnLike", "ArnNotLike"}:
        hit = any(_glob(e).fullmatch(a) for e in expected for a in actual)
    elif base == "Bool":
        hit = any(e.lower() == a.lower() for e in expected for a in actual)
    else:
        hit = any(e == a for e in expected for a in actual)
    return not hit if negated else hit


# --- expansion from the template ------------------------------------------------------------


def _line(node: Any) -> int:
    """1-based template line of a node cfn-lint decoded (0 when it carries none)."""
    mark = getattr(node, "start_mark", None)
    return int(mark.line) + 1 if mark is not None else 0


@dataclass
class _RoleBuilder:
    stack: LocalStack
    owner: str
    statements: list[Statement] = field(default_factory=list)
    managed: list[str] = field(default_factory=list)

    def inline(self, document: Mapping[str, Any], origin: str = "inline") -> None:
        statements = document.get("Statement", [])
        for node in statements if isinstance(statements, list) else [statements]:
            resolved = self.stack.resolve(node)
            if not isinstance(resolved, Mapping):
                continue  # an !If whose condition is false here: AWS::NoValue, no statement
            self.statements.append(Statement.parse(resolved, _line(node), origin))

    def policy_template(self, name: str, parameters: Mapping[str, Any], line: int) -> None:
        if name not in SAM_POLICY_TEMPLATES:
            known = sorted(SAM_POLICY_TEMPLATES)
            raise PolicyError(f"line {line}: SAM policy template {name} is not known ({known})")
        definition = _substitute_refs(SAM_POLICY_TEMPLATES[name], parameters)
        for statement in definition["Statement"]:
            resolved = self.stack.resolve(statement)
            self.statements.append(Statement.parse(resolved, line, name))

    def attach(self, name: str, line: int) -> None:
        self.managed.append(f"arn:aws:iam::aws:policy/{_MANAGED_PATHS[name]}{name}")
        document = {"Effect": "Allow", "Action": list(MANAGED_POLICIES[name]), "Resource": "*"}
        self.statements.append(Statement.parse(document, line, f"managed:{name}"))

    def policies(self, entries: Any) -> None:
        """A SAM `Policies` value: inline documents, policy templates; nothing else here."""
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, Mapping) and "Statement" in entry:
                self.inline(entry)
            elif isinstance(entry, Mapping) and len(entry) == 1:
                ((name, parameters),) = entry.items()
                self.policy_template(name, parameters or {}, _line(entry))
            else:
                raise PolicyError(
                    f"line {_line(entry)}: {entry!r}: only inline statements and SAM policy "
                    "templates are expanded locally (a managed policy name is not)"
                )

    def build(self, name: str, session: str, line: int) -> Role:
        return Role(self.owner, name, session, tuple(self.statements), tuple(self.managed), line)


def _substitute_refs(value: Any, parameters: Mapping[str, Any]) -> Any:
    """A policy template's {"Ref": Parameter} replaced by the value given in the template."""
    if isinstance(value, list):
        return [_substitute_refs(v, parameters) for v in value]
    if isinstance(value, Mapping):
        if set(value) == {"Ref"} and value["Ref"] in parameters:
            return parameters[value["Ref"]]
        return {k: _substitute_refs(v, parameters) for k, v in value.items()}
    return value


def stack_roles(stack: LocalStack) -> dict[str, Role]:
    """Every role the deployed stack would have, by owner: functions, state machines,
    schedules (SAM makes one role per ScheduleV2 event) and the template's IAM roles."""
    roles: dict[str, Role] = {}
    for owner, resource in stack.of_type("AWS::Serverless::Function").items():
        roles.update(_function_roles(stack, owner, resource))
    for owner, resource in stack.of_type("AWS::Serverless::StateMachine").items():
        props = resource.get("Properties", {})
        builder = _RoleBuilder(stack, owner)
        builder.policies(props.get("Policies", []))
        if props.get("Tracing", {}).get("Enabled"):
            builder.attach("AWSXrayWriteOnlyAccess", _line(props.get("Tracing")))
        # Step Functions names the session itself, with a random string.
        roles[owner] = builder.build(f"{stack.name}-{owner}Role", uuid.uuid4().hex, _line(resource))
    for owner, resource in stack.of_type("AWS::IAM::Role").items():
        builder = _RoleBuilder(stack, owner)
        for policy in resource.get("Properties", {}).get("Policies", []):
            builder.inline(policy["PolicyDocument"])
        if resource.get("Properties", {}).get("ManagedPolicyArns"):
            raise PolicyError(f"{owner}: managed policies of an IAM role are not expanded locally")
        roles[owner] = builder.build(stack.physical[owner], owner, _line(resource))
    return roles


def _function_roles(stack: LocalStack, owner: str, resource: Any) -> dict[str, Role]:
    """A function's role, and the role of each of its ScheduleV2 events."""
    props = resource.get("Properties", {})
    if "Role" in props:
        raise PolicyError(f"{owner}: a function with its own Role is not expanded locally")
    globals_line = _line(stack.template.get("Globals", {}).get("Function")) or _line(resource)
    builder = _RoleBuilder(stack, owner)
    builder.policies(props.get("Policies", []))
    # SAM grants an asynchronous invocation's SQS destinations to the function's role.
    destinations = props.get("EventInvokeConfig", {}).get("DestinationConfig", {})
    for outcome in ("OnFailure", "OnSuccess"):
        target = destinations.get(outcome, {})
        if target.get("Type") == "SQS" and "Destination" in target:
            send = {
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": stack.resolve(target["Destination"]),
            }
            builder.statements.append(Statement.parse(send, _line(target), "sam:Destination"))
    builder.attach("AWSLambdaBasicExecutionRole", globals_line)
    if props.get("Tracing", stack.function_globals().get("Tracing")) == "Active":
        builder.attach("AWSXrayWriteOnlyAccess", globals_line)
    roles: dict[str, Role] = {}
    for event_id, event in props.get("Events", {}).items():
        if event["Type"] == "SQS":
            builder.attach("AWSLambdaSQSQueueExecutionRole", _line(event))
        elif event["Type"] == "ScheduleV2":
            schedule = f"{owner}{event_id}"
            roles[schedule] = _schedule_role(stack, owner, schedule, event)
    name, session = f"{stack.name}-{owner}Role", stack.physical[owner]
    roles[owner] = builder.build(name, session, _line(resource))
    return roles


def _schedule_role(stack: LocalStack, function: str, schedule: str, event: Any) -> Role:
    """What SAM generates for a ScheduleV2 event: invoke the function, send to its DLQ."""
    builder = _RoleBuilder(stack, schedule)
    line = _line(event)
    invoke = {
        "Effect": "Allow",
        "Action": "lambda:InvokeFunction",
        "Resource": stack.arns[function],
    }
    builder.statements.append(Statement.parse(invoke, line, "sam:ScheduleV2"))
    dead_letters = event["Properties"].get("DeadLetterConfig", {})
    if dead_letters.get("Type") == "SQS":
        queue = stack.arns[f"{schedule}Queue"]
        send = {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue}
        builder.statements.append(Statement.parse(send, _line(dead_letters), "sam:DLQ"))
    elif "Arn" in dead_letters:
        send = {
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": stack.resolve(dead_letters["Arn"]),
        }
        builder.statements.append(Statement.parse(send, _line(dead_letters), "sam:DLQ"))
    return builder.build(f"{stack.name}-{schedule}Role", uuid.uuid4().hex, line)
