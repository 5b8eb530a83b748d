"""The composition root: handlers build adapters only through imagebatch.wiring, which calls
no AWS at import and gives each invocation adapters with meters of its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from imagebatch import wiring
from imagebatch.aws.endpoint_usage import EndpointUsageStore
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.ports import (
    AsyncEndpointPort,
    ChunkLedgerPort,
    ChunkStorePort,
    EndpointInstancesPort,
    EndpointUsagePort,
    TaskTokensPort,
    ThroughputPort,
)
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.costs.prices import load_aws_prices
from imagebatch.settings import GenerateSettings, StorageSettings, SubmitChunkSettings

ROOT = Path(__file__).resolve().parents[2]
ENV = {"DATA_BUCKET": "data-bucket", "LEDGER_TABLE": "ledger-table", "AWS_REGION": "us-east-1"}
SAGEMAKER_ENV = {
    **ENV,
    "SAGEMAKER_ENDPOINT_NAME": "ep",
    "SAGEMAKER_INSTANCE_TYPE": "ml.inf2.xlarge",
    "SAGEMAKER_MODEL_ID": "tiny-sd",
    "SAGEMAKER_HOLD_FACTOR": "3",
}


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    # Building a client needs a region; no request is made.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_importing_the_wiring_builds_no_client() -> None:
    # A fresh interpreter: clients built by other tests in this process would hide one.
    code = (
        "import imagebatch.wiring\n"
        "from imagebatch.aws import clients\n"
        "built = [f.__name__ for f in (clients.s3_client, clients.dynamodb_client,"
        " clients.sfn_client, clients.bedrock_runtime_client, clients.sagemaker_runtime_client,"
        " clients.events_client, clients.sagemaker_client) if f.cache_info().currsize]\n"
        "assert not built, built\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(ROOT / "src")})


@pytest.mark.parametrize("path", sorted((ROOT / "functions").glob("*/app.py")), ids=str)
def test_handlers_build_adapters_only_through_the_wiring(path: Path) -> None:
    reached = sorted(
        name
        for name in _imports(path)
        if name.startswith(("imagebatch.aws", "boto3", "botocore"))
        or name in {"imagebatch.costs.prices", "imagebatch.models.bedrock_models"}
    )
    assert not reached, f"{path}: ask imagebatch.wiring for adapters and prices: {reached}"


def test_only_the_handlers_import_the_wiring() -> None:
    importers = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "src" / "imagebatch").rglob("*.py"))
        if path.name != "wiring.py"
        and any(n.startswith("imagebatch.wiring") for n in _imports(path))
    ]
    assert not importers, f"the composition root sits above the use cases: {importers}"


def test_each_invocation_gets_adapters_with_meters_of_their_own() -> None:
    settings = StorageSettings.model_validate(ENV)
    first, second = wiring.ledger(settings), wiring.ledger(settings)
    first.meter.add(ddb_read_units=3)
    assert second.meter.usage().ddb_read_units == 0
    assert wiring.store(settings).meter is not wiring.store(settings).meter
    # The clients under them are the execution environment's, built once.
    assert first.client is second.client


def test_the_store_is_the_events_bucket_where_it_names_one() -> None:
    settings = StorageSettings.model_validate(ENV)
    assert wiring.store(settings).bucket == "data-bucket"
    assert wiring.store(settings, "other-bucket").bucket == "other-bucket"


def test_adapters_beside_the_ledger_count_on_its_meter() -> None:
    ledger = wiring.ledger(StorageSettings.model_validate(ENV))
    throughput = wiring.endpoint_throughput(ledger)
    usage = wiring.endpoint_usage(ledger)
    assert isinstance(throughput, EndpointThroughput)
    assert isinstance(usage, EndpointUsageStore)
    assert throughput.meter is ledger.meter
    assert usage.meter is ledger.meter
    assert throughput.table == ledger.table == "ledger-table"


def test_endpoint_costing_is_priced_from_the_settings() -> None:
    settings = SubmitChunkSettings.model_validate(SAGEMAKER_ENV)
    ledger = wiring.ledger(settings)
    costing = wiring.endpoint_costing(settings, ledger, submit_memory_mb=1024)
    region = load_aws_prices().region("us-east-1")
    assert costing.prices is region
    assert costing.price == region.instance("ml.inf2.xlarge")
    assert costing.endpoint_name == "ep"
    assert costing.model == "tiny-sd"
    assert costing.path.submit_memory_mb == 1024
    assert costing.path.hold_factor == Decimal(3)
    assert isinstance(costing.throughput, EndpointThroughput)


def test_retry_policy_cap_is_never_below_its_base() -> None:
    settings = GenerateSettings.model_validate({**ENV, "RETRY_BASE_MS": "800", "RETRY_CAP_MS": "5"})
    policy = wiring.retry_policy(settings)
    assert (policy.base_s, policy.cap_s) == (0.8, 0.8)


def test_the_adapters_satisfy_their_ports() -> None:
    # Checked by mypy (each assignment names the port); run, it only builds the adapters.
    settings = SubmitChunkSettings.model_validate(SAGEMAKER_ENV)
    ledger: ChunkLedgerPort = wiring.ledger(settings)
    store: ChunkStorePort = wiring.store(settings)
    tokens: TaskTokensPort = wiring.task_tokens()
    endpoint: AsyncEndpointPort = wiring.async_endpoint(settings)
    assert isinstance(ledger, Ledger)
    throughput: ThroughputPort = wiring.endpoint_throughput(wiring.ledger(settings))
    usage: EndpointUsagePort = wiring.observer_usage(settings)
    instances: EndpointInstancesPort = wiring.endpoint_instances(settings)
    assert all(x is not None for x in (store, tokens, endpoint, throughput, usage, instances))


def test_a_replaced_client_factory_reaches_the_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    # test_iam_grants stubs Bedrock this way; the wiring must look the factory up at each call.
    stub = object()
    monkeypatch.setattr("imagebatch.aws.clients.bedrock_runtime_client", lambda: stub)
    settings = GenerateSettings.model_validate(ENV)
    assert wiring.bedrock_backend(settings)._client is stub
