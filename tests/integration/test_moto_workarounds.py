"""One test per workaround in moto_workarounds.py: a moto upgrade that breaks one fails here."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from botocore.exceptions import ClientError
from imagebatch_local.cloud import moto_workarounds
from imagebatch_local.cloud.iam_enforcer import IamEnforcer, enforcing
from imagebatch_local.cloud.iam_policies import Role
from imagebatch_local.cloud.iam_requests import Where
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("MOTO_PORT", str(port))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    moto_workarounds.reset_moto(endpoint)
    try:
        yield endpoint
    finally:
        moto_workarounds.restore_all()
        server.stop()


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)  # type: ignore[call-overload]


def _role(endpoint: str) -> str:
    iam = _client("iam", endpoint)
    return str(iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"])


def _zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "")
    return buffer.getvalue()


def _wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_enable_state_machine_execution_runs_definitions(moto_endpoint: str) -> None:
    # GIVEN execution enabled (first: the config call drops existing state machines)
    # and a state machine with one Pass state
    moto_workarounds.enable_state_machine_execution(moto_endpoint)
    sfn = _client("stepfunctions", moto_endpoint)
    definition = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Result": {"x": 1}, "End": True}},
    }
    arn = sfn.create_state_machine(
        name="sm", definition=json.dumps(definition), roleArn=_role(moto_endpoint)
    )["stateMachineArn"]

    # WHEN an execution starts (always with a name: without one moto's ARN ends in ':None')
    execution = sfn.start_execution(stateMachineArn=arn, name="run-1", input="{}")

    # THEN it really runs the definition and returns its output
    described = _wait_for(
        lambda: (
            (d := sfn.describe_execution(executionArn=execution["executionArn"]))["status"]
            != "RUNNING"
            and d
        )
    )
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"x": 1}
    assert execution["executionArn"].endswith(":run-1")

    # AND restore_all puts moto's process-wide setting back (a later mock_aws only records)
    from moto.core.config import default_user_config

    moto_workarounds.restore_all()
    assert default_user_config["stepfunctions"]["execute_state_machine"] is False


def test_serialise_dynamodb_writes_keeps_every_concurrent_add(moto_endpoint: str) -> None:
    # GIVEN a table and the write lock
    moto_workarounds.serialise_dynamodb_writes()
    ddb = _client("dynamodb", moto_endpoint)
    ddb.create_table(
        TableName="t",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )

    # WHEN 100 ADDs race from 10 threads
    def add_ten() -> None:
        client = _client("dynamodb", moto_endpoint)
        for _ in range(10):
            client.update_item(
                TableName="t",
                Key={"pk": {"S": "k"}},
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )

    threads = [threading.Thread(target=add_ten) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN none is lost
    item = ddb.get_item(TableName="t", Key={"pk": {"S": "k"}})["Item"]
    assert item["n"]["N"] == "100"


def test_serialised_transactions_never_copy_the_table_and_still_roll_back(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the write lock and a ledger-shaped table (pk, sk) with a counter and a record
    from moto.dynamodb.models.table import Table

    moto_workarounds.serialise_dynamodb_writes()
    ddb = _client("dynamodb", moto_endpoint)
    ddb.create_table(
        TableName="tx",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="tx", Item={"pk": {"S": "b"}, "sk": {"S": "SUMMARY"}, "n": {"N": "5"}})
    ddb.put_item(TableName="tx", Item={"pk": {"S": "b"}, "sk": {"S": "OLD"}, "v": {"S": "old"}})
    table_copies = []
    real_deepcopy = copy.deepcopy

    def counting(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            table_copies.append(value)
        return real_deepcopy(value, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)
    puts = [
        {"Put": {"TableName": "tx", "Item": {"pk": {"S": "b"}, "sk": {"S": f"IMAGE#{i}"}}}}
        for i in range(1, 20)
    ]
    overwrite = {
        "Put": {"TableName": "tx", "Item": {"pk": {"S": "b"}, "sk": {"S": "OLD"}, "v": {"S": "x"}}}
    }
    add = {
        "Update": {
            "TableName": "tx",
            "Key": {"pk": {"S": "b"}, "sk": {"S": "SUMMARY"}},
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    remove = {"Delete": {"TableName": "tx", "Key": {"pk": {"S": "b"}, "sk": {"S": "GONE"}}}}
    ddb.put_item(TableName="tx", Item={"pk": {"S": "b"}, "sk": {"S": "GONE"}})

    # WHEN a transaction of new items, an overwrite, an ADD and a delete fails on its last check
    failing = {
        "ConditionCheck": {
            "TableName": "tx",
            "Key": {"pk": {"S": "b"}, "sk": {"S": "MISSING"}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(TransactItems=[*puts, overwrite, add, remove, failing])

    # THEN nothing of it landed: new items gone, the overwritten, added-to and deleted items
    # as they were; and the table was never copied
    items = {i["sk"]["S"]: i for i in ddb.scan(TableName="tx")["Items"]}
    assert sorted(items) == ["GONE", "OLD", "SUMMARY"]
    assert items["OLD"]["v"]["S"] == "old"
    assert items["SUMMARY"]["n"]["N"] == "5"
    assert table_copies == []

    # AND the same transaction without the failing check lands whole
    ddb.transact_write_items(TransactItems=[*puts, overwrite, add, remove])
    items = {i["sk"]["S"]: i for i in ddb.scan(TableName="tx")["Items"]}
    assert len(items) == 21
    assert items["OLD"]["v"]["S"] == "x"
    assert items["SUMMARY"]["n"]["N"] == "6"
    assert "GONE" not in items


def test_run_lambdas_in_process_returns_results_and_errors(moto_endpoint: str) -> None:
    # GIVEN a function whose code runs in this process
    calls: list[Any] = []

    def invoker(name: str, event: Any) -> tuple[str, bool]:
        calls.append((name, event))
        if event.get("fail"):
            return json.dumps({"errorType": "Boom", "errorMessage": "failed on purpose"}), True
        return json.dumps({"echo": event["value"]}), False

    moto_workarounds.run_lambdas_in_process(invoker)
    aws_lambda = _client("lambda", moto_endpoint)
    aws_lambda.create_function(
        FunctionName="fn",
        Runtime="python3.12",
        Role=_role(moto_endpoint),
        Handler="app.handler",
        Code={"ZipFile": _zip()},
    )

    # WHEN it is invoked through the Lambda API, once fine and once failing
    ok = aws_lambda.invoke(FunctionName="fn", Payload=json.dumps({"value": 7}))
    failed = aws_lambda.invoke(FunctionName="fn", Payload=json.dumps({"fail": True}))

    # THEN the results come back as Lambda returns them, errors flagged as function errors
    assert json.loads(ok["Payload"].read()) == {"echo": 7}
    assert "FunctionError" not in ok
    assert failed["FunctionError"] == "Handled"
    assert json.loads(failed["Payload"].read())["errorType"] == "Boom"
    assert [name for name, _ in calls] == ["fn", "fn"]


def test_s3_notifications_are_asynchronous_and_complete(moto_endpoint: str) -> None:
    # GIVEN a bucket notifying a slow in-process function
    received: list[dict[str, Any]] = []
    release = threading.Event()

    def invoker(name: str, event: Any) -> tuple[str, bool]:
        release.wait(5)
        received.append(event)
        return "{}", False

    errors: list[BaseException] = []
    moto_workarounds.run_lambdas_in_process(invoker)
    moto_workarounds.invoke_s3_notifications_asynchronously(errors.append)
    aws_lambda, s3 = _client("lambda", moto_endpoint), _client("s3", moto_endpoint)
    arn = aws_lambda.create_function(
        FunctionName="ingest",
        Runtime="python3.12",
        Role=_role(moto_endpoint),
        Handler="app.handler",
        Code={"ZipFile": _zip()},
    )["FunctionArn"]
    s3.create_bucket(Bucket="notify-bucket")
    s3.put_bucket_notification_configuration(
        Bucket="notify-bucket",
        NotificationConfiguration={
            "LambdaFunctionConfigurations": [
                {"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )

    # WHEN an object is put while the function is still busy
    started = time.monotonic()
    s3.put_object(Bucket="notify-bucket", Key="manifests/a b.jsonl", Body=b"{}")
    put_seconds = time.monotonic() - started
    release.set()

    # THEN PutObject did not wait for the function, and the event has AWS's full shape
    assert put_seconds < 4
    records = _wait_for(lambda: [e for e in received if "Records" in e])
    record = records[0]["Records"][0]
    # URL-encoded as on AWS (moto also encodes '/'): handlers must unquote_plus the key
    assert record["s3"]["object"]["key"] != "manifests/a b.jsonl"
    assert unquote_plus(record["s3"]["object"]["key"]) == "manifests/a b.jsonl"
    assert record["userIdentity"]["principalId"]
    assert "requestParameters" in record and "responseElements" in record
    assert errors == []


def test_complete_s3_event_fills_only_missing_fields() -> None:
    # GIVEN a record that already has userIdentity
    event = {"Records": [{"userIdentity": {"principalId": "me"}, "s3": {"object": {"key": "k"}}}]}

    # WHEN it is completed
    completed = moto_workarounds.complete_s3_event(event)

    # THEN what was there stays, what was missing is added
    record = completed["Records"][0]
    assert record["userIdentity"] == {"principalId": "me"}
    assert record["s3"]["object"]["sequencer"] == "0"
    assert record["s3"]["bucket"]["ownerIdentity"]["principalId"] == "LOCAL"


def test_forward_task_failure_cause_reaches_the_catch(moto_endpoint: str) -> None:
    # GIVEN a task waiting for its token, whose failure is caught into $.error
    moto_workarounds.enable_state_machine_execution(moto_endpoint)
    moto_workarounds.forward_task_failure_cause()
    sqs, sfn = _client("sqs", moto_endpoint), _client("stepfunctions", moto_endpoint)
    queue = sqs.create_queue(QueueName="tokens")["QueueUrl"]
    definition = {
        "StartAt": "Wait",
        "States": {
            "Wait": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue, "MessageBody": {"token.$": "$$.Task.Token"}},
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                "End": True,
            },
            "Done": {"Type": "Pass", "End": True},
        },
    }
    arn = sfn.create_state_machine(
        name="sm", definition=json.dumps(definition), roleArn=_role(moto_endpoint)
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="run-1", input="{}")["executionArn"]
    message = _wait_for(lambda: sqs.receive_message(QueueUrl=queue).get("Messages"))
    token = json.loads(message[0]["Body"])["token"]

    # WHEN the task fails with an error and a cause
    sfn.send_task_failure(taskToken=token, error="SageMaker.InferenceFailed", cause="why")

    # THEN the Catch sees both, as on AWS
    done = _wait_for(
        lambda: (d := sfn.describe_execution(executionArn=execution))["status"] != "RUNNING" and d
    )
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"])["error"] == {
        "Error": "SageMaker.InferenceFailed",
        "Cause": "why",
    }


def test_a_lambda_task_denied_access_fails_with_aws_error_name(moto_endpoint: str) -> None:
    # GIVEN a Lambda task whose state machine role grants nothing (the local IAM check answers
    # the engine's Invoke with AccessDeniedException), its failure caught into $.error
    moto_workarounds.enable_state_machine_execution(moto_endpoint)
    moto_workarounds.name_lambda_access_denied_as_aws()
    aws_lambda, sfn = _client("lambda", moto_endpoint), _client("stepfunctions", moto_endpoint)
    role = _role(moto_endpoint)
    function = aws_lambda.create_function(
        FunctionName="fn",
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": _zip()},
    )["FunctionArn"]
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function, "Payload": {}},
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                "End": True,
            },
            "Done": {"Type": "Pass", "End": True},
        },
    }
    arn = sfn.create_state_machine(name="sm", definition=json.dumps(definition), roleArn=role)[
        "stateMachineArn"
    ]
    nothing = Role("sm", "sm-role", "session", ())
    iam = IamEnforcer({"sm": nothing}, Where(REGION, "123456789012", (arn,)), "sm")

    # WHEN it runs
    with enforcing(iam):
        execution = sfn.start_execution(stateMachineArn=arn, input="{}")["executionArn"]
        done = _wait_for(
            lambda: (
                (d := sfn.describe_execution(executionArn=execution))["status"] != "RUNNING" and d
            )
        )

    # THEN the error is the one AWS names, and the cause is AWS's AccessDenied wording
    error = json.loads(done["output"])["error"]
    assert error["Error"] == "Lambda.AWSLambdaException"
    assert "is not authorized to perform: lambda:InvokeFunction" in error["Cause"]
    assert "Error Code: AccessDeniedException" in error["Cause"]
    assert [d.action for d in iam.denials] == ["lambda:InvokeFunction"]


def _distributed_map_machine(sfn: Any, endpoint: str) -> str:
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Twice",
                    "States": {
                        "Twice": {
                            "Type": "Pass",
                            "Parameters": {"n.$": "States.MathAdd($.v, $.v)"},
                            "End": True,
                        }
                    },
                },
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                "ResultPath": "$.doubled",
                "Next": "Done",
            },
            "Done": {"Type": "Pass", "End": True},
        },
    }
    arn: str = sfn.create_state_machine(
        name="dm", definition=json.dumps(definition), roleArn=_role(endpoint)
    )["stateMachineArn"]
    return arn


def test_capture_map_runs_keeps_what_the_children_did(moto_endpoint: str) -> None:
    # GIVEN a Distributed Map over three items
    moto_workarounds.enable_state_machine_execution(moto_endpoint)
    started: list[tuple[str, str]] = []
    runs: list[moto_workarounds.MapRunCapture] = []
    moto_workarounds.capture_map_runs(lambda *ids: started.append(ids), runs.append)
    sfn = _client("stepfunctions", moto_endpoint)
    arn = _distributed_map_machine(sfn, moto_endpoint)

    # WHEN it runs
    items = {"items": [{"v": 1}, {"v": 2}, {"v": 3}]}
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(items))["executionArn"]
    done = _wait_for(
        lambda: (d := sfn.describe_execution(executionArn=execution))["status"] != "RUNNING" and d
    )

    # THEN the children's history and the collected result were kept (moto's API has neither)
    assert done["status"] == "SUCCEEDED"
    assert started == [(arn, execution)]
    (run,) = runs
    assert run.execution_arn == execution and run.state_machine_arn == arn
    assert sorted(r["n"] for r in run.result or []) == [2, 4, 6]
    exited = [e for e in run.events if e["type"] == "PassStateExited"]
    assert sorted(json.loads(e["stateExitedEventDetails"]["output"])["n"] for e in exited) == [
        2,
        4,
        6,
    ]
    assert run.map_run_arn == sfn.list_map_runs(executionArn=execution)["mapRuns"][0]["mapRunArn"]


def test_capture_map_runs_can_refuse_to_start_the_children(moto_endpoint: str) -> None:
    # GIVEN a Distributed Map whose children may not be started
    moto_workarounds.enable_state_machine_execution(moto_endpoint)
    runs: list[moto_workarounds.MapRunCapture] = []

    def refuse(machine: str, execution: str) -> None:
        raise PermissionError("states:StartExecution denied")

    moto_workarounds.capture_map_runs(refuse, runs.append)
    sfn = _client("stepfunctions", moto_endpoint)
    arn = _distributed_map_machine(sfn, moto_endpoint)

    # WHEN it runs
    items = json.dumps({"items": [{"v": 1}]})
    execution = sfn.start_execution(stateMachineArn=arn, input=items)["executionArn"]
    done = _wait_for(
        lambda: (d := sfn.describe_execution(executionArn=execution))["status"] != "RUNNING" and d
    )

    # THEN no child ran and the Map did not succeed
    assert runs == []
    assert done["status"] == "FAILED" or "error" in json.loads(done.get("output", "{}"))
    history = sfn.get_execution_history(executionArn=execution)["events"]
    assert "MapStateSucceeded" not in {e["type"] for e in history}


def test_list_moto_modules_once_routes_requests_without_listing_the_package(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the module list taken once
    import os

    moto_workarounds.list_moto_modules_once()
    listings: list[str] = []
    real_listdir = os.listdir

    def counting(path: Any = ".") -> list[str]:
        listings.append(str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    s3 = _client("s3", moto_endpoint)
    ddb = _client("dynamodb", moto_endpoint)

    # WHEN requests for two services reach the server
    s3.create_bucket(Bucket="routing-bucket")
    for i in range(5):
        s3.put_object(Bucket="routing-bucket", Key=f"k{i}", Body=b"x")
    tables = ddb.list_tables()["TableNames"]

    # THEN each went to its own backend, and moto's package folder was never listed
    assert len(s3.list_objects_v2(Bucket="routing-bucket")["Contents"]) == 5
    assert tables == []
    assert not [path for path in listings if path.rstrip("/").endswith("moto")]

    # AND restore_all puts moto's own listing back
    moto_workarounds.restore_all()
    from moto import backends

    assert "s3" in list(backends.list_of_moto_modules())
    assert len(listings) > 0


def test_iterate_distributed_map_items_runs_more_items_than_the_stack_allows(
    moto_endpoint: str,
) -> None:
    # GIVEN execution enabled, the loop instead of moto's per-item recursion, and a
    # Distributed Map of 1,200 items on a single worker (more than the ~970 moto managed)
    moto_workarounds.enable_state_machine_execution(moto_endpoint)
    moto_workarounds.iterate_distributed_map_items()
    sfn = _client("stepfunctions", moto_endpoint)
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "MaxConcurrency": 1,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Keep",
                    "States": {"Keep": {"Type": "Pass", "End": True}},
                },
                "ResultSelector": {"n.$": "States.ArrayLength($)"},
                "End": True,
            }
        },
    }
    arn = sfn.create_state_machine(
        name="many", definition=json.dumps(definition), roleArn=_role(moto_endpoint)
    )["stateMachineArn"]

    # WHEN it runs
    execution = sfn.start_execution(
        stateMachineArn=arn, name="many-1", input=json.dumps(list(range(1200)))
    )

    # THEN every item was processed and the execution finished
    described = _wait_for(
        lambda: (
            (d := sfn.describe_execution(executionArn=execution["executionArn"]))["status"]
            != "RUNNING"
            and d
        ),
        timeout=120,
    )
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["output"]) == {"n": 1200}


def test_s3_notifications_name_the_version_in_a_versioned_bucket(moto_endpoint: str) -> None:
    # GIVEN a versioned bucket and an unversioned one, both notifying a function
    received: list[dict[str, Any]] = []

    def invoker(name: str, event: Any) -> tuple[str, bool]:
        received.append(event)
        return "{}", False

    errors: list[BaseException] = []
    moto_workarounds.run_lambdas_in_process(invoker)
    moto_workarounds.invoke_s3_notifications_asynchronously(errors.append)
    aws_lambda, s3 = _client("lambda", moto_endpoint), _client("s3", moto_endpoint)
    arn = aws_lambda.create_function(
        FunctionName="ingest-versions",
        Runtime="python3.12",
        Role=_role(moto_endpoint),
        Handler="app.handler",
        Code={"ZipFile": _zip()},
    )["FunctionArn"]
    for bucket in ("versioned-bucket", "plain-bucket"):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "LambdaFunctionConfigurations": [
                    {"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
    s3.put_bucket_versioning(
        Bucket="versioned-bucket", VersioningConfiguration={"Status": "Enabled"}
    )

    # WHEN an object is put in each
    put = s3.put_object(Bucket="versioned-bucket", Key="manifests/v.jsonl", Body=b"{}")
    s3.put_object(Bucket="plain-bucket", Key="manifests/p.jsonl", Body=b"{}")

    # THEN the versioned bucket's event names the version, as AWS's does; the other none
    records = _wait_for(lambda: [e for e in received if "Records" in e][1:] and received)
    by_bucket = {e["Records"][0]["s3"]["bucket"]["name"]: e["Records"][0] for e in records}
    assert by_bucket["versioned-bucket"]["s3"]["object"]["versionId"] == put["VersionId"]
    assert "versionId" not in by_bucket["plain-bucket"]["s3"]["object"]
    assert errors == []
