"""What running the functions costs besides their duration: billed but not counted by a Meter.

Per invocation (`invocation_lines`, orchestration lines of costs.usage.price_usage, so in every
estimate, hold, charge and report, labelled init, logs and traces): priced from the counted
Lambda requests, which are the invocations the ledger recorded (each function counts its own
request once per invocation, in the commit it makes; tests/e2e/test_local_pipeline.py checks
them against the local runtime's invocations) and the estimate's (one per ingest, finalize,
contact sheet and chunk attempt; two per attempt on SageMaker: SubmitChunk and RecordResult):
  - Lambda INIT: since 2025-08-01 Lambda bills the INIT phase of on-demand functions packaged
    as ZIP with managed runtimes (AWS Compute Blog, "AWS Lambda standardizes billing for
    INIT Phase", 2025) at the function's GB-second price. Nothing here measures INIT, so a
    cold start is estimated: INIT_MS at INIT_MEMORY_MB for COLD_START_SHARE of invocations.
  - CloudWatch Logs: every function logs JSON (Powertools) plus the runtime's START/END/REPORT
    lines; ingestion is billed per GB, storage per GB-month for as long as the log group
    keeps them (template.yaml's LogRetentionDays, default 30; storage is billed on the
    compressed size, so pricing the ingested bytes bounds it from above).
  - X-Ray: tracing is Active on every function and the state machine. A chunk invoked by the
    state machine joins the execution's trace; an invocation started by S3, SQS or the API
    starts its own, sampled (the default rule: the first request each second and 5% of the
    rest). Each invocation is priced as one trace recorded: an upper bound. There is no
    TracingSampleRate parameter to price instead: Lambda's rate cannot be configured ("You
    can't configure the X-Ray sampling rate for your functions", Lambda Developer Guide,
    X-Ray), and a sampling rule (AWS::XRay::SamplingRule) is the account's, not the stack's,
    and would reach only the state machine's traces; `Tracing: PassThrough` is the way to
    stop paying for them.
Per stack per month (not a batch's: `stack_monthly`, shown by `imagebatch estimate`):
  - custom metrics (Powertools' EMF: each metric name and dimension set is one metric-month,
    pro-rated by the hour while it is published) and CloudWatch alarms (per alarm-month).
All figures are estimates from these constants; the reconciliation against Cost Explorer
(`imagebatch costs --reconcile`) shows how far they are from the bill.
"""

from __future__ import annotations

from decimal import Decimal

from imagebatch.costs.prices import RegionPrices
from imagebatch.models.money import MICRO

# A python3.12 arm64 function importing Powertools, pydantic and boto3 (the domain layer):
# about a second of INIT; rounded up, as nothing measured it here.
INIT_MS = 1_200
# INIT is billed at the function's memory; the Globals' MemorySize (512 MB) stands for all
# (the chunk function has 256, ingest and the contact sheet 1024).
INIT_MEMORY_MB = 512
# A batch's chunk environments are reused by its later chunks (MapMaxConcurrency at a time)
# while ingest, finalize and the contact sheet usually start cold: about half cold over a
# batch of 20 chunks; every invocation of a one-chunk batch.
COLD_START_SHARE = Decimal("0.5")
# START, END and REPORT (~400 bytes) and about five Powertools JSON lines (~400 bytes each),
# plus CloudWatch's 26 bytes of overhead per event.
LOG_BYTES_PER_INVOCATION = 2_600
LOG_RETENTION_DAYS = 30  # template.yaml's LogRetentionDays default
TRACES_PER_INVOCATION = 1  # upper bound: see the module's docstring

# The stack's own CloudWatch alarms (IngestFailureAlarm; with SageMaker the two endpoint
# alarms and the two Application Auto Scaling creates for the target-tracking policy) and its
# EMF metrics, one dimension set (service) each: ImagesSucceeded, ImagesFailed,
# BedrockThrottles, BatchesFinished, Batches<Succeeded|Partial|Failed|Rejected>,
# CatalogVariantsChanged, CatalogProductErrors.
STACK_ALARMS = {"bedrock": 1, "sagemaker": 1 + 2 + 2}
STACK_METRICS = {"bedrock": 10, "sagemaker": 10}

# The lines invocation_lines prices, and the label each is shown under (`imagebatch cost`, the
# query API's batch summary).
TELEMETRY_LINES = {"lambda_init": "init", "cloudwatch_logs": "logs", "xray_traces": "traces"}

_BYTES_PER_GB = Decimal(1024**3)
_MB_MS_PER_GB_S = Decimal(1024 * 1000)
_DAYS_PER_MONTH = Decimal(30)


def invocation_lines(lambda_requests: int, prices: RegionPrices, arch: str) -> dict[str, Decimal]:
    """Micro-dollars of INIT, logs and traces for this many invocations (exact Decimals)."""

    def usd(name: str, quantity: Decimal) -> Decimal:
        return prices.service(name).usd * quantity * MICRO

    invocations = Decimal(lambda_requests)
    init_gb_s = invocations * COLD_START_SHARE * INIT_MS * INIT_MEMORY_MB / _MB_MS_PER_GB_S
    log_gb = invocations * LOG_BYTES_PER_INVOCATION / _BYTES_PER_GB
    retained_months = Decimal(LOG_RETENTION_DAYS) / _DAYS_PER_MONTH
    return {
        "lambda_init": usd(f"lambda_{arch}_gb_second", init_gb_s),
        "cloudwatch_logs": usd("cloudwatch_logs_ingest_gb", log_gb)
        + usd("cloudwatch_logs_storage_gb_month", log_gb * retained_months),
        "xray_traces": usd("xray_trace_recorded", invocations * TRACES_PER_INVOCATION),
    }


def stack_monthly(prices: RegionPrices, *, sagemaker: bool) -> dict[str, Decimal]:
    """Micro-dollars a month the stack costs whether or not a batch runs: its alarms and its
    custom metrics (while published; a month of batches every day publishes them all)."""
    kind = "sagemaker" if sagemaker else "bedrock"
    return {
        "cloudwatch_alarms": prices.service("cloudwatch_alarm_month").usd
        * STACK_ALARMS[kind]
        * MICRO,
        "cloudwatch_metrics": prices.service("cloudwatch_custom_metric_month").usd
        * STACK_METRICS[kind]
        * MICRO,
    }
