"""Word when a batch ends: the "Batch Finished" event (shape checked as a rule on the stack's own
bus delivers it, on moto), the finalize function's least-privilege PutEvents on that bus only,
and a dashboard whose metrics are exactly ones the functions emit."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any, get_args, get_type_hints

import boto3
import pytest
from cfnlint.decode import decode

from imagebatch.aws.events import EVENT_SOURCE, EventBus
from imagebatch.aws.ledger import Ledger
from imagebatch.errors import StorageError
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.records import BatchStatus
from imagebatch.pipeline.batch_events import (
    DETAIL_TYPE,
    BatchFinishedDetail,
    BatchFinishedNotifier,
)
from imagebatch.pipeline.ingest import IngestOutcome

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def _settled_batch(dynamodb_client: Any, table: str) -> BatchRecord:
    ledger = Ledger(dynamodb_client, table)
    ledger.create_batch(
        "b-done",
        {
            "status": "RUNNING",
            "images_total": 4,
            "tags": {"project": "demo"},
            "estimate_micro_usd": 320_900,
            "max_cost_micro_usd": 5_000_000,
        },
    )
    costs = {"inference": 240_000, "orchestration": 275, "storage": 4, "total": 240_279}
    settled = ledger.settle_batch(
        "b-done",
        BatchStatus.PARTIAL,
        {"costs": costs, "failures_by_class": {"content_filtered": 1}},
        {"images_succeeded": 3, "images_failed": 1, "spent_micro_usd": 240_280},
    )
    assert settled is not None, "a running batch settles"
    return settled


def test_the_event_reaches_a_rule_on_the_stacks_bus_with_its_documented_shape(
    dynamodb_client: Any, ledger_table: str
) -> None:
    # GIVEN a rule on the stack's own bus as README shows it, delivering to a queue
    events = boto3.client("events", region_name=REGION)
    bus = events.create_event_bus(Name="imagebatch-batches")["EventBusArn"].rsplit("/", 1)[1]
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="batch-finished")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["imagebatch"], "detail-type": ["Batch Finished"]}
    events.put_rule(Name="imagebatch-finished", EventPattern=json.dumps(pattern), EventBusName=bus)
    events.put_targets(
        Rule="imagebatch-finished", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}]
    )

    # WHEN finalize's hook runs for a settled batch
    summary = _settled_batch(dynamodb_client, ledger_table)
    published = BatchFinishedNotifier(EventBus(events, bus), "data-bucket")("b-done", summary)

    # THEN one event arrives, from imagebatch, with the status, counts and money
    assert published == 1
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    event = json.loads(messages[0]["Body"])
    assert event["source"] == EVENT_SOURCE and event["detail-type"] == DETAIL_TYPE
    detail = BatchFinishedDetail.model_validate(event["detail"])
    assert detail.batch_id == "b-done" and detail.status == "PARTIAL"
    assert (detail.images.total, detail.images.succeeded, detail.images.failed) == (4, 3, 1)
    assert detail.cost_micro_usd.total == 240_279 and detail.cost_micro_usd.charged == 240_280
    assert detail.cost_micro_usd.budget == 5_000_000 and detail.cost_micro_usd.estimate == 320_900
    assert detail.failures_by_class == {"content_filtered": 1}
    assert detail.tags == {"project": "demo"}
    assert detail.summary_report == "s3://data-bucket/reports/b-done/summary.json"


class _Refusing:
    def put(self, detail_type: str, detail_json: str) -> str:
        raise StorageError("PutEvents: AccessDenied", transient=False)


def test_a_refused_event_never_fails_finalize() -> None:
    summary = BatchRecord(
        batch_id="b1", status=BatchStatus.SUCCEEDED, images_total=1, images_succeeded=1
    )
    assert BatchFinishedNotifier(_Refusing(), "b")("b1", summary) == 0


# -- template.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode(str(ROOT / "template.yaml"))
    assert not matches and isinstance(decoded, dict)
    parsed: dict[str, Any] = json.loads(json.dumps(decoded))
    return parsed


def test_only_finalize_may_put_events_and_only_imagebatch_on_the_stacks_own_bus(
    template: dict[str, Any],
) -> None:
    # On the default bus, anyone in the account allowed events:PutEvents could forge a
    # "Batch Finished" under source imagebatch; the stack's own bus refuses them.
    granted = {}
    for name, resource in template["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []) or []:
            for node in policy.get("Statement", []) if isinstance(policy, dict) else []:
                # a conditional statement (!If [condition, statement, AWS::NoValue]): its
                # statement counts as granted
                statement = node["Fn::If"][1] if "Fn::If" in node else node
                actions = statement["Action"]
                if "events:PutEvents" in (actions if isinstance(actions, list) else [actions]):
                    granted[name] = statement
    assert list(granted) == ["FinalizeFunction"]
    statement = granted["FinalizeFunction"]
    assert statement["Action"] == "events:PutEvents"
    # the bus's ARN, built (a !GetAtt would be a cycle: the bus's policy names this role)
    bus_name = template["Resources"]["BatchEventBus"]["Properties"]["Name"]["Fn::Sub"]
    assert statement["Resource"]["Fn::Sub"].endswith(f":event-bus/{bus_name}")
    assert statement["Condition"] == {"StringEquals": {"events:source": EVENT_SOURCE}}
    # AND the bus's policy denies PutEvents to every principal but the finalize role
    bus = template["Resources"]["BatchEventBus"]
    assert bus["Type"] == "AWS::Events::EventBus"
    policy = bus["Properties"]["Policy"]
    statements = policy["Statement"]
    denies = [s for s in statements if s["Effect"] == "Deny"]
    assert len(denies) == 1 and denies[0]["Principal"] == "*"
    assert denies[0]["Action"] == "events:PutEvents"
    assert denies[0]["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["FinalizeFunctionRole", "Arn"]}}
    }
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert [a["Principal"] for a in allows] == [
        {"AWS": {"Fn::GetAtt": ["FinalizeFunctionRole", "Arn"]}}
    ]
    # AND finalize is told which bus
    variables = template["Resources"]["FinalizeFunction"]["Properties"]["Environment"]
    assert variables["Variables"]["EVENT_BUS_NAME"] == {"Ref": "BatchEventBus"}


def emitted_metrics() -> set[str]:
    """Every metric name the handlers pass to metrics.add_metric; the ingest handler's
    f"Batches{status.title()}" expands over IngestOutcome's statuses."""
    names: set[str] = set()
    statuses = get_args(get_type_hints(IngestOutcome)["status"])
    for path in sorted((ROOT / "functions").glob("*/app.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_metric"):
                continue
            arguments = {k.arg: k.value for k in node.keywords}
            name = arguments.get("name", node.args[0] if node.args else None)
            if isinstance(name, ast.Constant):
                names.add(str(name.value))
            elif isinstance(name, ast.JoinedStr):
                prefix = "".join(str(v.value) for v in name.values if isinstance(v, ast.Constant))
                names.update(f"{prefix}{status.title()}" for status in statuses)
    return names


def test_the_dashboard_shows_only_metrics_the_functions_emit(template: dict[str, Any]) -> None:
    # GIVEN the dashboard body (Fn::Sub of a JSON document) and what the handlers emit
    body = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{AWS::Region\}", REGION, body))
    environment = template["Globals"]["Function"]["Environment"]["Variables"]
    shown = set()
    for widget in dashboard["widgets"]:
        for metric in widget["properties"]["metrics"]:
            plain = [part for part in metric if isinstance(part, str)]
            if not plain:
                continue  # a math expression over the metrics below it
            namespace, name, dimension, value = plain
            # THEN each is in the functions' namespace, with Powertools' service dimension
            assert namespace == environment["POWERTOOLS_METRICS_NAMESPACE"]
            assert (dimension, value) == ("service", environment["POWERTOOLS_SERVICE_NAME"])
            shown.add(name)
    emitted = emitted_metrics()
    # AND every metric shown is one a handler emits, and the four asked for are shown
    assert shown <= emitted, shown - emitted
    assert {"ImagesSucceeded", "ImagesFailed", "BedrockThrottles", "ChargedMicroUsd"} <= shown
    expressions = [
        part["expression"]
        for widget in dashboard["widgets"]
        for metric in widget["properties"]["metrics"]
        for part in metric
        if isinstance(part, dict) and "expression" in part
    ]
    assert expressions == ["charged / 1000000"]
