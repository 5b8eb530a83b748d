"""What Lambda sends an asynchronous invocation's on-failure destination once its retries are
spent: the invocation record (Developer Guide, "Capturing records of Lambda asynchronous
invocations"). IngestFailureQueue holds one per manifest whose ingest failed every attempt;
`imagebatch redrive-ingest` replays its requestPayload, the original S3 event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field


class InvocationRequestContext(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    request_id: str = Field(alias="requestId")
    function_arn: str = Field(alias="functionArn")
    # RetriesExhausted, EventAgeExceeded (the event waited past MaximumEventAgeInSeconds)
    condition: str
    approximate_invoke_count: int = Field(alias="approximateInvokeCount")


class InvocationRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    version: str
    timestamp: str
    request_context: InvocationRequestContext = Field(alias="requestContext")
    request_payload: Any = Field(alias="requestPayload")
    response_context: dict[str, Any] = Field(alias="responseContext", default_factory=dict)
    # the error object (errorType, errorMessage); absent when the event expired unrun
    response_payload: Any = Field(alias="responsePayload", default=None)

    def error(self) -> str:
        """The last attempt's error, as one line."""
        payload = self.response_payload
        if isinstance(payload, dict):
            kind, message = payload.get("errorType"), payload.get("errorMessage")
            return ": ".join(str(part) for part in (kind, message) if part) or "no error given"
        return self.request_context.condition

    def s3_objects(self) -> list[str]:
        """s3://bucket/key of each record of an S3 event payload (what a person recognises;
        the event's keys are URL-encoded)."""
        payload = self.request_payload
        records = payload.get("Records", []) if isinstance(payload, dict) else []
        found = []
        for record in records:
            s3 = record.get("s3", {}) if isinstance(record, dict) else {}
            bucket, key = s3.get("bucket", {}).get("name"), s3.get("object", {}).get("key")
            if bucket and key:
                found.append(f"s3://{bucket}/{unquote_plus(str(key))}")
        return found


@dataclass(frozen=True)
class FailedIngest:
    """One message of IngestFailureQueue, as received (aws.ingest_failures)."""

    message_id: str
    receipt_handle: str
    #: None: the body is not an invocation record (nothing to replay)
    record: InvocationRecord | None
    body: str
