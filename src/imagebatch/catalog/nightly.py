"""One scheduled catalog run (render, diff, drop a manifest) and, after the batch, publishing.

The scheduler's event names no products: each run reads every catalogs/<name>/config.json
(or the ones the event names), so adding a catalog is an upload, not a redeploy.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field

from imagebatch.aws.catalog_state import CatalogState, NightManifest
from imagebatch.aws.ledger import Ledger
from imagebatch.aws.s3_store import BatchStore
from imagebatch.catalog.products import (
    CATALOG_PREFIX,
    CATALOG_TAG,
    CONFIG_NAME,
    IDENTITY_TAG,
    RUN_TAG,
    SKU_TAG,
    VARIANT_TAG,
    CatalogConfig,
    manifest_key,
    manifest_lines,
    plan_catalog_run,
    read_products,
)
from imagebatch.errors import CatalogError, ObjectMissingError
from imagebatch.manifest.checks import CATALOG_MANIFESTS_PREFIX
from imagebatch.models.batch_record import BatchRecord

logger = Logger(child=True)


class CatalogRunEvent(BaseModel):
    """The Scheduler target's Input (template.yaml) or `imagebatch local catalog`."""

    scheduled_time: datetime = Field(
        description="<aws.scheduler.scheduled-time>: names the night the run belongs to."
    )
    catalogs: list[str] | None = Field(
        default=None, description="Only these catalog names; every catalog when absent."
    )


class CatalogRunResult(BaseModel):
    catalog: str
    run: str
    products: int = 0
    changed: int = 0
    unchanged: int = 0
    errors: int = 0
    manifest_key: str | None = None
    errors_key: str | None = None
    problem: str | None = None


def run_night(scheduled_time: datetime) -> str:
    """The night a run belongs to; a second run the same night renders the same manifest."""
    return scheduled_time.date().isoformat()


def run_catalogs(
    event: CatalogRunEvent, *, store: BatchStore, state: CatalogState
) -> list[CatalogRunResult]:
    names = event.catalogs or sorted(
        key.removeprefix(CATALOG_PREFIX).split("/", 1)[0]
        for key in store.list_keys(CATALOG_PREFIX)
        if key.count("/") == 2 and key.endswith(f"/{CONFIG_NAME}")
    )
    run = run_night(event.scheduled_time)
    results = []
    for name in names:
        try:
            results.append(run_catalog(name, run, store=store, state=state))
        except CatalogError as exc:
            # One broken catalog must not stop the others' night.
            logger.error("catalog not run", extra={"catalog": name, "problem": str(exc)})
            results.append(CatalogRunResult(catalog=name, run=run, problem=str(exc)))
    return results


def run_catalog(name: str, run: str, *, store: BatchStore, state: CatalogState) -> CatalogRunResult:
    config_key = f"{CATALOG_PREFIX}{name}/{CONFIG_NAME}"
    try:
        config = CatalogConfig.parse(store.get_bytes(config_key), config_key)
    except ObjectMissingError as exc:
        raise CatalogError(f"{config_key}: cannot read it ({exc})") from None
    if config.name != name:
        raise CatalogError(f"{config_key}: name {config.name!r} does not match its folder {name!r}")
    try:
        products = read_products(store.open_object(config.products_key), config.products_key)
        plan = plan_catalog_run(config, products, state.recorded_identities(name))
    except ObjectMissingError as exc:
        raise CatalogError(f"{config.products_key}: cannot read it ({exc})") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{config.products_key}: not UTF-8 ({exc})") from None

    result = CatalogRunResult(
        catalog=name,
        run=run,
        products=plan.products,
        changed=len(plan.changed),
        unchanged=plan.unchanged,
        errors=len(plan.errors),
    )
    if plan.errors:
        result.errors_key = store.put_bytes(
            f"reports/catalogs/{name}/{run}/errors.jsonl",
            "".join(f"{error.model_dump_json()}\n" for error in plan.errors).encode(),
            "application/x-ndjson",
        )
    if plan.changed:
        key = manifest_key(config, run)
        body = "".join(f"{line}\n" for line in manifest_lines(config, plan, run)).encode()
        version = store.put_manifest(key, body)
        # Recorded after the upload: finalize publishes only a batch of this very manifest.
        night = NightManifest(key=key, sha256=hashlib.sha256(body).hexdigest(), version_id=version)
        state.record_night_manifest(name, run, night)
        result.manifest_key = key
    logger.info("catalog rendered", extra=result.model_dump(mode="json"))
    return result


class CatalogPublisher:
    """Finalize's hook for catalog batches (pipeline.finalize_hooks.BatchFinalizedHook): a batch
    that is not a catalog night is left alone."""

    def __init__(self, *, store: BatchStore, ledger: Ledger, state: CatalogState) -> None:
        self._store = store
        self._ledger = ledger
        self._state = state

    def __call__(self, batch_id: str, summary: BatchRecord) -> int:
        return publish_catalog_batch(
            batch_id, summary, store=self._store, ledger=self._ledger, state=self._state
        )


def _ran_the_nights_manifest(
    summary: BatchRecord, name: str, run: str, state: CatalogState
) -> bool:
    """Whether the batch ran the manifest the catalog function recorded for this night: its key
    under manifests/catalogs/<name>/, its content's SHA-256 and (where both have one) its
    version. Tags alone are what any manifest author writes."""
    key = summary.manifest_key or ""
    if not key.startswith(f"{CATALOG_MANIFESTS_PREFIX}{name}/"):
        return False
    night = state.night_manifest(name, run)
    if night is None or night.key != key or night.sha256 != summary.manifest_sha256:
        return False
    version = summary.manifest_version_id
    return night.version_id is None or version is None or night.version_id == version


def publish_catalog_batch(
    batch_id: str,
    summary: BatchRecord,
    *,
    store: BatchStore,
    ledger: Ledger,
    state: CatalogState,
) -> int:
    """Give each succeeded variant its stable latest key and remember what made it.

    Only succeeded images are recorded, so a failed variant is tried again the next night.
    Returns the number of variants published.
    """
    tags = json.loads(summary.settings or "{}").get("tags") or {}
    name, run = tags.get(CATALOG_TAG), tags.get(RUN_TAG)
    if not name or not run:
        return 0
    if not _ran_the_nights_manifest(summary, name, run, state):
        logger.warning(
            "catalog tags on a batch the catalog function did not write: not published",
            extra={"batch_id": batch_id, "catalog": name, "run": run},
        )
        return 0
    config_key = f"{CATALOG_PREFIX}{name}/{CONFIG_NAME}"
    config = CatalogConfig.parse(store.get_bytes(config_key), config_key)
    made = {
        record["image_id"]: record["output_key"]
        for record in ledger.image_records(batch_id)
        if record["status"] == "SUCCEEDED" and record.get("output_key")
    }
    published = 0
    for ref in store.get_chunk_index(batch_id):
        for job in store.get_chunk(ref.key).images:
            source = made.get(job.image_id)
            sku, variant = job.tags.get(SKU_TAG), job.tags.get(VARIANT_TAG)
            if source is None or not sku or not variant:
                continue
            latest = config.latest_key(sku, variant)
            # State first: if the copy then fails, the retried finalize copies again.
            if state.record_latest(
                name,
                sku=sku,
                variant=variant,
                identity_sha256=job.tags.get(IDENTITY_TAG, ""),
                latest_key=latest,
                batch_id=batch_id,
                run=run,
            ):
                store.copy(source, latest)
                published += 1
    return published
