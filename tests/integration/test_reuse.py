"""Reuse before work on the Bedrock chunk path (pipeline.reuse, issue 20): an image some batch
already made is copied, not bought again; whatever decides its pixels changing makes a new
one; `reuse: false` and a deleted source make it again; the ledger still adds up."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.backends.bedrock import GeneratedImage, bedrock_identity
from imagebatch.backends.retry import BackoffPolicy
from imagebatch.costs.prices import load_aws_prices
from imagebatch.costs.usage import LambdaClock
from imagebatch.manifest.schema import ManifestItem
from imagebatch.models.batch_record import BatchRecord
from imagebatch.models.bedrock_models import load_catalogue
from imagebatch.models.records import ChunkFile, ChunkResult, ChunkTask, ImageJob
from imagebatch.pipeline.generate import generate_chunk
from imagebatch.planning.routing import expand_item

MODEL = "stability.sd3-5-large-v1:0"
PRICE = load_catalogue().get(MODEL).price_for(1024, 1024).micro_usd_per_image  # type: ignore[union-attr]
CONTEXT = {"catalogue": load_catalogue()}


class RecordingBackend:
    """Makes a PNG whose bytes name the prompt and seed; records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def generate(self, job: ImageJob) -> GeneratedImage:
        with self._lock:
            self.calls.append(job.image_id)
        return GeneratedImage(png=f"PNG {job.prompt} {job.seed}".encode(), seed=job.seed)


def manifest(edits: dict[str, dict[str, Any]] | None = None, n: int = 5) -> list[dict[str, Any]]:
    lines = [{"id": f"p{k}", "prompt": f"product {k} on white", "model": MODEL} for k in range(n)]
    return [{**line, **(edits or {}).get(line["id"], {})} for line in lines]


def jobs_of(lines: list[dict[str, Any]], *, reuse: bool = True) -> list[ImageJob]:
    """The manifest's images as ingest plans them (planning.routing.expand_item)."""
    jobs: list[ImageJob] = []
    for number, line in enumerate(lines, start=2):
        item = ManifestItem.model_validate(line, context=CONTEXT)
        jobs.extend(expand_item(item, number, {"team": "web"}, reuse=reuse))
    return jobs


@pytest.fixture
def env(s3_client: Any, s3_bucket: str, dynamodb_client: Any, ledger_table: str) -> Any:
    class Env:
        store = BatchStore(s3_client, s3_bucket)
        ledger = Ledger(dynamodb_client, ledger_table)
        bucket = s3_bucket
        s3 = s3_client

        def run(
            self,
            batch_id: str,
            jobs: list[ImageJob],
            backend: RecordingBackend,
            *,
            reuse: bool = True,
            cap: int | None = None,
            threads: int = 2,
        ) -> ChunkResult:
            attributes: dict[str, Any] = {"status": "RUNNING", "images_total": len(jobs)}
            if cap is not None:
                attributes["max_cost_micro_usd"] = cap
            self.ledger.create_batch(batch_id, attributes)
            # a fresh store and ledger per batch, as each Lambda invocation has
            store = BatchStore(self.s3, self.bucket)
            ledger = Ledger(self.ledger.client, self.ledger.table)
            ref = store.put_chunk(
                ChunkFile(
                    batch_id=batch_id,
                    chunk_id="00000",
                    backend="bedrock",
                    output_prefix="outputs/",
                    images=jobs,
                )
            )
            store.meter.take()
            return generate_chunk(
                ChunkTask(
                    batch_id=batch_id, bucket=self.bucket, chunk=ref, chunk_concurrency=threads
                ),
                store=store,
                ledger=ledger,
                backend=backend,
                catalogue=load_catalogue(),
                concurrency=4,
                time_left_ms=lambda: 600_000,
                commit_reserve_ms=1_000,
                retry_policy=BackoffPolicy(base_s=0.001, cap_s=0.004, max_attempts=3),
                prices=load_aws_prices().region("us-east-1"),
                clock=LambdaClock(512),
                reuse=reuse,
            )

        def records(self, batch_id: str) -> dict[str, dict[str, Any]]:
            return {r["image_id"]: r for r in self.ledger.image_records(batch_id)}

        def summary(self, batch_id: str) -> BatchRecord:
            summary = self.ledger.get_batch(batch_id)
            assert summary is not None
            return summary

        def png(self, key: str) -> bytes:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    return Env()


def test_the_edited_manifest_makes_exactly_the_edited_images(env: Any) -> None:
    # GIVEN a 5-image batch already made
    env.run("first", jobs_of(manifest()), RecordingBackend())

    # WHEN the manifest comes back with one prompt fixed
    again = RecordingBackend()
    result = env.run("second", jobs_of(manifest({"p3": {"prompt": "product 3 on grey"}})), again)

    # THEN only the edited image is made; the other four are copied into the new batch's keys
    assert again.calls == ["p3-1"]
    assert result.succeeded == 5
    summary = env.summary("second")
    assert summary.images_succeeded == 5
    assert summary.images_reused == 4
    assert summary.reuse_saved_micro_usd == 4 * PRICE
    assert summary.cost_micro_usd == PRICE
    records = env.records("second")
    for image_id in ("p0-1", "p1-1", "p2-1", "p4-1"):
        record = records[image_id]
        assert record["cost_micro_usd"] == 0
        assert record["reused_from_batch_id"] == "first"
        assert record["reused_from_image_id"] == image_id
        assert record["reuse_saved_micro_usd"] == PRICE
        assert record["output_key"] == f"outputs/second/{image_id}.png"
        assert env.png(record["output_key"]) == env.png(f"outputs/first/{image_id}.png")
    assert "reused_from_batch_id" not in records["p3-1"]
    assert records["p3-1"]["cost_micro_usd"] == PRICE


def test_the_same_manifest_under_a_new_key_makes_none(env: Any) -> None:
    env.run("first", jobs_of(manifest()), RecordingBackend())
    again = RecordingBackend()
    env.run("copy-of-first", jobs_of(manifest()), again)
    assert again.calls == []
    summary = env.summary("copy-of-first")
    assert (summary.images_reused, summary.cost_micro_usd) == (5, 0)


@pytest.mark.parametrize(
    "edit",
    [{"seed": 7}, {"width": 1216, "height": 832}, {"negative_prompt": "text"}],
    ids=["seed", "size", "negative-prompt"],
)
def test_a_changed_seed_or_size_makes_a_new_image(env: Any, edit: dict[str, Any]) -> None:
    env.run("first", jobs_of(manifest()), RecordingBackend())
    again = RecordingBackend()
    env.run("second", jobs_of(manifest({"p1": edit})), again)
    assert again.calls == ["p1-1"]


def test_reuse_false_on_the_batch_on_an_item_or_on_the_stack_makes_them(env: Any) -> None:
    env.run("first", jobs_of(manifest()), RecordingBackend())

    batch_off = RecordingBackend()
    env.run("header-off", jobs_of(manifest(), reuse=False), batch_off)
    assert sorted(batch_off.calls) == [f"p{k}-1" for k in range(5)]

    item_off = RecordingBackend()
    env.run("item-off", jobs_of(manifest({"p2": {"reuse": False}})), item_off)
    assert item_off.calls == ["p2-1"]

    stack_off = RecordingBackend()
    env.run("stack-off", jobs_of(manifest()), stack_off, reuse=False)
    assert sorted(stack_off.calls) == [f"p{k}-1" for k in range(5)]
    assert "images_reused" not in env.summary("stack-off").model_fields_set


def test_a_deleted_source_is_made_again_never_a_broken_image(env: Any) -> None:
    env.run("first", jobs_of(manifest()), RecordingBackend())
    env.s3.delete_object(Bucket=env.bucket, Key="outputs/first/p0-1.png")
    again = RecordingBackend()
    env.run("second", jobs_of(manifest()), again)
    assert again.calls == ["p0-1"]
    records = env.records("second")
    assert records["p0-1"]["cost_micro_usd"] == PRICE
    assert env.png("outputs/second/p0-1.png").startswith(b"PNG product 0")

    # and the index now names the new image: a third batch reuses it
    third = RecordingBackend()
    env.run("third", jobs_of(manifest()), third)
    assert third.calls == []


def test_ledger_conservation_holds_with_reused_images(env: Any) -> None:
    env.run("first", jobs_of(manifest()), RecordingBackend())
    env.run("second", jobs_of(manifest({"p4": {"prompt": "new"}})), RecordingBackend())
    for batch_id in ("first", "second"):
        summary = env.summary(batch_id)
        records = env.records(batch_id).values()
        # the images' charges are the summary's inference, to the micro-dollar
        assert sum(int(r["cost_micro_usd"]) for r in records) == summary.cost_micro_usd
        # and every commit's charge is in the day's rollup, once
        rolled = sum(
            int(r.get("spent_micro_usd", 0)) for r in env.ledger.query_batch(batch_id, "DAY#")
        )
        assert rolled == summary.spent_micro_usd
        # the copies, lookups and index writes are charged as counted operations
        assert summary.spent_micro_usd > summary.cost_micro_usd


def test_a_reused_image_holds_and_spends_only_its_copy(env: Any) -> None:
    env.run("first", jobs_of(manifest()), RecordingBackend())
    # GIVEN a cap far below one image's inference
    again = RecordingBackend()
    env.run("capped", jobs_of(manifest()), again, cap=PRICE // 2)
    # THEN every image is still reused: the hold covered the copies only
    assert again.calls == []
    summary = env.summary("capped")
    assert summary.images_reused == 5
    assert summary.reserved_micro_usd == 0
    assert 0 < summary.spent_micro_usd <= PRICE // 2


def test_two_batches_making_the_same_images_at_once_lose_nothing(env: Any) -> None:
    # GIVEN two batches of the same images, the second looking them up after the first did
    # but before the first committed (moto's in-process DynamoDB is not thread-safe, so the
    # race is staged: the first batch's backend runs the whole second batch on its first call)
    right = RecordingBackend()

    class Interleaving(RecordingBackend):
        def generate(self, job: ImageJob) -> GeneratedImage:
            if not self.calls:
                env.run("right", jobs_of(manifest()), right)
            return super().generate(job)

    left = Interleaving()
    env.run("left", jobs_of(manifest()), left, threads=1)

    # THEN both paid (neither saw the other's images), and each batch records each image
    # once, with its own PNG in place
    assert sorted(left.calls) == sorted(right.calls) == [f"p{k}-1" for k in range(5)]
    for batch_id in ("left", "right"):
        records = env.records(batch_id)
        assert sorted(records) == [f"p{k}-1" for k in range(5)]
        for record in records.values():
            assert record["status"] == "SUCCEEDED" and record["cost_micro_usd"] == PRICE
            assert env.png(record["output_key"]).startswith(b"PNG product")
    # AND a third batch reuses them, from whichever batch the index names last
    third = RecordingBackend()
    env.run("third", jobs_of(manifest()), third)
    assert third.calls == []
    assert {r["reused_from_batch_id"] for r in env.records("third").values()} == {"left"}


_examples = itertools.count()
_line = st.fixed_dictionaries(
    {"id": st.sampled_from("abcdef"), "prompt": st.sampled_from(["a cup", "a mug", "a jug"])},
    optional={"seed": st.sampled_from([1, 2]), "width": st.just(1216), "reuse": st.booleans()},
)
_manifests = st.lists(
    st.lists(_line, min_size=1, max_size=5, unique_by=lambda line: line["id"]),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(uploads=_manifests)
def test_images_made_are_the_identities_not_made_before(
    env: Any,
    dynamodb_client: Any,
    new_ledger_table: Callable[[str], str],
    uploads: list[list[dict[str, Any]]],
) -> None:
    # GIVEN a fresh table per example (the index is table-wide)
    example = next(_examples)
    env.ledger = Ledger(dynamodb_client, new_ledger_table(f"ledger-reuse-{example}"))
    made_before: set[str] = set()
    for number, lines in enumerate(uploads):
        for line in lines:
            if "width" in line:
                line["height"] = 832
        jobs = jobs_of([{**line, "model": MODEL} for line in lines])
        identities = {
            job.image_id: bedrock_identity(job, load_catalogue().get(MODEL))  # type: ignore[arg-type]
            for job in jobs
        }
        # WHEN the manifests are uploaded one after another
        backend = RecordingBackend()
        env.run(f"prop-{example}-{number}", jobs, backend)
        # THEN an image is made exactly when its identity was not made before, by an earlier
        # upload or an earlier line of this one (the chunk makes it once and copies it), or
        # when its line says reuse: false
        expected_made: list[str] = []
        made_here: set[str] = set()
        for job in jobs:
            identity = identities[job.image_id]
            if job.reuse and (identity in made_before or identity in made_here):
                continue
            if job.reuse:
                made_here.add(identity)
            expected_made.append(job.image_id)
        expected = sorted(expected_made)
        assert sorted(backend.calls) == expected
        made_before |= set(identities.values())


def test_a_reused_copy_carries_the_evidence_finalize_records_it_from(env: Any) -> None:
    # GIVEN a batch whose images were all copied from an earlier batch
    env.run("first", jobs_of(manifest()), RecordingBackend())
    env.run("copy-of-first", jobs_of(manifest()), RecordingBackend())
    # WHEN a copy's S3 metadata is read (what finalize reads if the attempt died before its
    # commit: pipeline/stored_images.py)
    for image_id, record in env.records("copy-of-first").items():
        head = env.s3.head_object(Bucket=env.bucket, Key=record["output_key"])
        # THEN it names its image and chunk and the inference it cost: nothing
        assert head["Metadata"]["image-id"] == image_id
        assert head["Metadata"]["chunk-id"] == record["chunk_id"]
        assert head["Metadata"]["cost-micro-usd"] == "0"


# --- before the batch runs: ingest's estimate and budget ------------------------------------


def _ingest(env: Any, sfn_client: Any, lines: list[dict[str, Any]], header: dict[str, Any]) -> Any:
    """Upload `lines` under a header and run ingest on them, as the ingest function does."""
    import json

    import boto3

    from imagebatch.aws.stepfunctions import StepFunctionsStarter
    from imagebatch.costs.estimate import Shape
    from imagebatch.pipeline.ingest import IngestPorts, ManifestObject, ingest_manifest
    from imagebatch.planning.stack_options import DeployedOptions

    role = boto3.client("iam", region_name="us-east-1").create_role(
        RoleName=f"sfn-{next(_examples)}", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    machine = sfn_client.create_state_machine(
        name=f"m-{next(_examples)}",
        definition='{"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}',
        roleArn=role,
    )["stateMachineArn"]
    body = "\n".join(json.dumps(line) for line in [{"batch": header}, *lines]) + "\n"
    key = f"manifests/m-{next(_examples)}.jsonl"
    env.s3.put_object(Bucket=env.bucket, Key=key, Body=body.encode())
    etag = env.s3.head_object(Bucket=env.bucket, Key=key)["ETag"]
    ports = IngestPorts(
        store=BatchStore(env.s3, env.bucket),
        ledger=Ledger(env.ledger.client, env.ledger.table),
        starter=StepFunctionsStarter(sfn_client, machine),
        catalogue=load_catalogue(),
    )
    stack = DeployedOptions(
        chunk_size=50,
        max_concurrency=10,
        prices=load_aws_prices().region("us-east-1"),
        shape=Shape(chunk_size=50, map_concurrency=10),
    )
    return ingest_manifest(ManifestObject(env.bucket, key, etag), ports, stack)


def test_ingest_neither_estimates_nor_holds_images_already_made(env: Any, sfn_client: Any) -> None:
    # GIVEN a 5-image batch already made
    env.run("first", jobs_of(manifest()), RecordingBackend())
    # WHEN the manifest comes back with one prompt fixed, capped at 2.5 images' inference
    cap_usd = 2.5 * PRICE / 1_000_000
    edited = manifest({"p3": {"prompt": "product 3 on grey"}})
    outcome = _ingest(env, sfn_client, edited, {"max_cost_usd": cap_usd, "tags": {"team": "web"}})
    # THEN ingest counts only the edited image's inference: the batch is admitted
    assert outcome.status == "STARTED", outcome.message
    record = env.summary(outcome.batch_id)
    assert record.estimate_inference_micro_usd == PRICE
    assert record.estimate_images_reused == 4
    assert record.estimate_reuse_saved_micro_usd == 4 * PRICE


# --- duplicates within one batch --------------------------------------------------------------


def test_two_items_of_one_identity_in_a_chunk_are_made_once(env: Any) -> None:
    # GIVEN one chunk whose items a and b ask for the same image (same prompt and seed)
    lines = [
        {"id": "a", "prompt": "a blue mug", "seed": 7, "model": MODEL},
        {"id": "b", "prompt": "a blue mug", "seed": 7, "model": MODEL},
        {"id": "c", "prompt": "a red mug", "seed": 7, "model": MODEL},
    ]
    backend = RecordingBackend()
    env.run("dup", jobs_of(lines), backend)
    # THEN the image is made once and copied for the second item
    assert sorted(backend.calls) == ["a-1", "c-1"]
    records = env.records("dup")
    assert records["b-1"]["cost_micro_usd"] == 0
    assert records["b-1"]["reused_from_batch_id"] == "dup"
    assert records["b-1"]["reused_from_image_id"] == "a-1"
    assert env.png("outputs/dup/b-1.png") == env.png("outputs/dup/a-1.png")
    summary = env.summary("dup")
    assert (summary.images_succeeded, summary.images_reused) == (3, 1)
    assert summary.cost_micro_usd == 2 * PRICE


def test_the_plan_counts_an_identity_once_per_chunk_and_none_already_made(env: Any) -> None:
    import tempfile
    from pathlib import Path

    from imagebatch.planning.plan import plan_batch

    # GIVEN p0..p4 made, and a manifest of them plus two items asking for one new image
    env.run("first", jobs_of(manifest()), RecordingBackend())
    lines = [
        *manifest(),
        {"id": "x", "prompt": "a blue mug", "seed": 7, "model": MODEL},
        {"id": "y", "prompt": "a blue mug", "seed": 7, "model": MODEL},
    ]
    body = "\n".join(__import__("json").dumps(line) for line in lines).encode()
    # WHEN it is planned against the index
    with tempfile.TemporaryDirectory() as spool:
        plan = plan_batch(
            __import__("io").BytesIO(body),
            "m.jsonl",
            batch_id="planned",
            catalogue=load_catalogue(),
            chunk_size=50,
            spool=Path(spool),
            made=env.ledger,
        )
    # THEN only one image's inference is estimated: 5 are made, 1 is a copy of x's
    assert plan.reuse is not None
    assert (plan.images_total, plan.reuse.images) == (7, 6)
    assert plan.reuse.saved_micro_usd == 6 * PRICE
    assert plan.estimate_inference_micro_usd == PRICE


class _KilledAtCommit(Exception):
    """Lambda stopped the attempt at its timeout between its copies and its commit."""


class _KilledLedger:
    """The ledger as a killed attempt sees it: everything but the commit happens."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def commit_images(self, *args: Any, **kwargs: Any) -> int:
        raise _KilledAtCommit


def test_a_copy_a_killed_attempt_stored_is_recorded_as_reused_not_as_made(env: Any) -> None:
    env.run("first", jobs_of(manifest()), RecordingBackend())
    jobs = jobs_of(manifest())
    env.ledger.create_batch("second", {"status": "RUNNING", "images_total": len(jobs)})
    ref = env.store.put_chunk(
        ChunkFile(
            batch_id="second",
            chunk_id="00000",
            backend="bedrock",
            output_prefix="outputs/",
            images=jobs,
        )
    )
    bedrock = RecordingBackend()

    def attempt(ledger: Any) -> ChunkResult:
        return generate_chunk(
            ChunkTask(batch_id="second", bucket=env.bucket, chunk=ref),
            store=BatchStore(env.s3, env.bucket),
            ledger=ledger,
            backend=bedrock,
            catalogue=load_catalogue(),
            concurrency=2,
            time_left_ms=lambda: 600_000,
            commit_reserve_ms=1_000,
            prices=load_aws_prices().region("us-east-1"),
            clock=LambdaClock(512),
        )

    # GIVEN an attempt of a second batch killed after copying the first's images
    with pytest.raises(_KilledAtCommit):
        attempt(_KilledLedger(env.ledger))

    # WHEN the chunk runs again and records the copies from their PNGs
    attempt(env.ledger)

    # THEN they are recorded as the copies they are: reused, nothing bought, nothing charged
    # as made (Bedrock made none of them for this batch)
    assert bedrock.calls == []
    records = env.records("second")
    assert len(records) == len(jobs)
    for image_id, record in records.items():
        assert record["reused_from_batch_id"] == "first", image_id
        assert record["reused_from_image_id"] == image_id
        assert int(record["cost_micro_usd"]) == 0
    assert env.summary("second").images_reused == len(jobs)
