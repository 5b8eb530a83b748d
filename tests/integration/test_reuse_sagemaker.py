"""Reuse on the SageMaker (endpoint) path (issue 20): before a chunk is submitted, its images'
identities are looked up; those some batch already made are copied and recorded reused, and
only the rest go to the endpoint. S3 and DynamoDB are moto; the endpoint and Step Functions
are the recording stand-ins of tests/integration/test_async_endpoint.py."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.aws.sagemaker_runtime import AsyncEndpoint
from imagebatch.aws.stepfunctions import TaskTokens
from imagebatch.aws.throughput import EndpointThroughput
from imagebatch.backends.endpoint import EndpointModel
from imagebatch.costs.prices import InstancePrice, load_aws_prices
from imagebatch.costs.sagemaker_path import SageMakerPath
from imagebatch.costs.usage import LambdaClock
from imagebatch.models.records import ChunkFile, ImageJob
from imagebatch.models.sagemaker_contract import (
    AsyncNotification,
    ChunkInvocation,
    InvocationResult,
    ServedImage,
    ServingCall,
    SubmittedRequest,
)
from imagebatch.pipeline.sagemaker_costing import EndpointCosting
from imagebatch.pipeline.sagemaker_result import record_result
from imagebatch.pipeline.sagemaker_submit import SubmitTask, submit_chunk

PRICE = InstancePrice(
    instance_type="ml.test",
    accelerator="none",
    usd_per_hour=Decimal("3.6"),
    source="test",
    retrieved=date(2026, 11, 1),
)
MODEL = EndpointModel(
    model_id="sd15", model_data="models/a.tar.gz", max_batch=4, shape_buckets="64x64"
)


class _Tokens(TaskTokens):
    def __init__(self) -> None:
        self.answers: list[tuple[str, str]] = []

    def succeed(self, token: str, output: str) -> bool:
        self.answers.append(("success", output))
        return True

    def fail(self, token: str, error: str, cause: str) -> bool:
        self.answers.append(("failure", error))
        return True


class _Endpoint(AsyncEndpoint):
    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(
        self, input_location: str, inference_id: str, timeout_s: int | None = None
    ) -> SubmittedRequest:
        self.submitted.append(input_location)
        return SubmittedRequest(
            inference_id=inference_id, output_location=f"s3://b/async-outputs/{inference_id}.out"
        )


def jobs(prompts: list[str]) -> list[ImageJob]:
    return [
        ImageJob(
            image_id=f"p{i}-1",
            item_id=f"p{i}",
            index=1,
            line=i + 2,
            prompt=prompt,
            width=64,
            height=64,
            seed=i,
            model="sd15",
        )
        for i, prompt in enumerate(prompts)
    ]


@pytest.fixture
def env(s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str) -> Any:
    class Env:
        def fresh(self, endpoint_model: EndpointModel | None = MODEL) -> dict[str, Any]:
            """A new invocation's adapters (their meters count only that invocation)."""
            ledger = Ledger(dynamodb_client, ledger_table)
            throughput = EndpointThroughput(ledger.client, ledger.table, ledger.meter)
            throughput.add("ep", "sd15", {"64x64/30/cfg": (100_000, 1)})
            ledger.meter.take()
            costing = EndpointCosting(
                endpoint_name="ep",
                price=PRICE,
                prices=load_aws_prices().region("us-east-1"),
                path=SageMakerPath(),
                throughput=throughput,
                model="sd15",
                endpoint_model=endpoint_model,
            )
            return {
                "store": BatchStore(s3_client, s3_bucket),
                "ledger": ledger,
                "costing": costing,
                "clock": LambdaClock(512),
            }

        def run(self, batch_id: str, chunk_jobs: list[ImageJob]) -> tuple[list[str], _Tokens]:
            """Submit the batch's one chunk; the endpoint (played here) makes what it is sent.
            Returns the image ids sent to the endpoint."""
            ports = self.fresh()
            ports["ledger"].create_batch(
                batch_id, {"status": "RUNNING", "images_total": len(chunk_jobs)}
            )
            ref = ports["store"].put_chunk(
                ChunkFile(
                    batch_id=batch_id,
                    chunk_id="00000",
                    backend="sagemaker",
                    output_prefix="outputs/",
                    images=chunk_jobs,
                )
            )
            endpoint, tokens = _Endpoint(), _Tokens()
            task = SubmitTask(batch_id=batch_id, bucket=s3_bucket, chunk=ref, task_token="t" * 80)
            submit_chunk(task, endpoint=endpoint, tokens=tokens, **ports)
            sent: list[str] = []
            for location in endpoint.submitted:
                sent += self.answer(batch_id, location, tokens)
            return sent, tokens

        def answer(self, batch_id: str, location: str, tokens: _Tokens) -> list[str]:
            ports = self.fresh()
            store: BatchStore = ports["store"]
            invocation = ChunkInvocation.model_validate_json(store.read_uri(location))
            images = []
            for n, job in enumerate(invocation.images):
                key = f"outputs/{batch_id}/{job.image_id}.png"
                s3_client.put_object(Bucket=s3_bucket, Key=key, Body=f"PNG {job.prompt}".encode())
                images.append(
                    ServedImage(
                        image_id=job.image_id, status="SUCCEEDED", seed=job.seed, key=key, call=n
                    )
                )
            result = InvocationResult(
                batch_id=batch_id,
                chunk_id="00000",
                accelerator="cpu",
                max_batch=1,
                images=images,
                calls=[
                    ServingCall(call=n, width=64, height=64, steps=30, images=1, seconds=0.1)
                    for n in range(len(images))
                ],
            )
            output = f"async-outputs/{batch_id}.out"
            store.put_json(output, result.model_dump_json().encode())
            notification = AsyncNotification.model_validate(
                {
                    "invocationStatus": "Completed",
                    "inferenceId": "x",
                    "requestParameters": {"endpointName": "ep", "inputLocation": location},
                    "responseParameters": {"outputLocation": f"s3://{s3_bucket}/{output}"},
                }
            )
            record_result(notification, tokens=tokens, **ports)
            return [job.image_id for job in invocation.images]

        def records(self, batch_id: str) -> dict[str, dict[str, Any]]:
            ledger = Ledger(dynamodb_client, ledger_table)
            return {r["image_id"]: r for r in ledger.image_records(batch_id)}

        def png(self, key: str) -> bytes:
            return bytes(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())

    return Env()


def test_only_images_not_made_before_go_to_the_endpoint(env: Any) -> None:
    # GIVEN a batch of three images made on the endpoint
    sent, _ = env.run("first", jobs(["a mug", "a cup", "a jug"]))
    assert sent == ["p0-1", "p1-1", "p2-1"]
    # WHEN the manifest comes back with the third prompt changed
    sent, tokens = env.run("second", jobs(["a mug", "a cup", "a vase"]))
    # THEN only the changed image is sent; the two others are copied and recorded reused
    assert sent == ["p2-1"]
    records = env.records("second")
    for image_id in ("p0-1", "p1-1"):
        assert records[image_id]["status"] == "SUCCEEDED"
        assert records[image_id]["cost_micro_usd"] == 0
        assert records[image_id]["reused_from_batch_id"] == "first"
        assert records[image_id]["reuse_saved_micro_usd"] > 0
        assert env.png(records[image_id]["output_key"]) == env.png(f"outputs/first/{image_id}.png")
    assert records["p2-1"]["cost_micro_usd"] > 0
    assert [answer for answer, _ in tokens.answers] == ["success"]


def test_a_chunk_whose_images_were_all_made_sends_nothing_and_answers_its_token(
    env: Any,
) -> None:
    env.run("first", jobs(["a mug", "a cup"]))
    sent, tokens = env.run("again", jobs(["a mug", "a cup"]))
    assert sent == []
    assert [answer for answer, _ in tokens.answers] == ["success"]
    assert {r["reused_from_batch_id"] for r in env.records("again").values()} == {"first"}


def test_another_compile_or_other_buckets_make_new_images(env: Any) -> None:
    first = jobs(["a mug"])[0]
    recompiled = EndpointModel(
        model_id="sd15", model_data="models/b.tar.gz", max_batch=4, shape_buckets="64x64"
    )
    rebucketed = EndpointModel(
        model_id="sd15", model_data="models/a.tar.gz", max_batch=4, shape_buckets="64x64,128x128"
    )
    identities = {m.identity(first) for m in (MODEL, recompiled, rebucketed)}
    assert len(identities) == 3
