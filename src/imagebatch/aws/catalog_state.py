"""DynamoDB adapter for catalog state: per product variant, the last image that succeeded.

Layout (same table as the ledger, pk = CATALOG#<name>):
  sk VARIANT#<sku>#<variant>  identity_sha256, latest_key, batch_id, run
  sk NIGHT#<run>              manifest_key, manifest_sha256, manifest_version_id: the manifest
                              the catalog function wrote that night (what finalize may publish)

identity_sha256 is the image identity reuse goes by (models/identity.py). A variant recorded
before it (with a content_hash of the catalog's own) has none, so it runs once more; its
image, indexed when it was made, is then copied rather than bought (docs/reuse.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from imagebatch.aws.dynamo_items import from_item, now_iso, to_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def catalog_pk(name: str) -> str:
    return f"CATALOG#{name}"


def variant_sk(sku: str, variant: str) -> str:
    return f"VARIANT#{sku}#{variant}"


def night_sk(run: str) -> str:
    return f"NIGHT#{run}"


@dataclass(frozen=True)
class NightManifest:
    """The manifest the catalog function wrote for one night: its key, content and version
    (None: the bucket kept no version)."""

    key: str
    sha256: str
    version_id: str | None


class CatalogState:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self.table = table

    def recorded_identities(self, name: str) -> dict[tuple[str, str], str]:
        """(sku, variant) -> identity of its latest successful image: one paginated Query."""
        identities: dict[tuple[str, str], str] = {}
        pages = self._ddb.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :variant)",
            ExpressionAttributeValues=to_item({":pk": catalog_pk(name), ":variant": "VARIANT#"}),
            ProjectionExpression="sku, variant, identity_sha256",
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                record = from_item(item)
                if "identity_sha256" in record:
                    identities[(record["sku"], record["variant"])] = record["identity_sha256"]
        return identities

    def record_night_manifest(self, name: str, run: str, manifest: NightManifest) -> None:
        """What the catalog function wrote for a night; a second run the same night writes
        the same key again and records its newest version."""
        item: dict[str, object] = {
            "pk": catalog_pk(name),
            "sk": night_sk(run),
            "manifest_key": manifest.key,
            "manifest_sha256": manifest.sha256,
            "updated_at": now_iso(),
        }
        if manifest.version_id:
            item["manifest_version_id"] = manifest.version_id
        self._ddb.put_item(TableName=self.table, Item=to_item(item))

    def night_manifest(self, name: str, run: str) -> NightManifest | None:
        response = self._ddb.get_item(
            TableName=self.table,
            Key=to_item({"pk": catalog_pk(name), "sk": night_sk(run)}),
            ConsistentRead=True,
        )
        if "Item" not in response:
            return None
        record = from_item(response["Item"])
        return NightManifest(
            key=str(record["manifest_key"]),
            sha256=str(record["manifest_sha256"]),
            version_id=record.get("manifest_version_id"),
        )

    def record_latest(
        self,
        name: str,
        *,
        sku: str,
        variant: str,
        identity_sha256: str,
        latest_key: str,
        batch_id: str,
        run: str,
    ) -> bool:
        """Record a variant's new latest image; False when a later night already has.

        Batches can finish out of order (a slow night, a redrive); the run date decides.
        """
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item=to_item(
                    {
                        "pk": catalog_pk(name),
                        "sk": variant_sk(sku, variant),
                        "sku": sku,
                        "variant": variant,
                        "identity_sha256": identity_sha256,
                        "latest_key": latest_key,
                        "batch_id": batch_id,
                        "run": run,
                        "updated_at": now_iso(),
                    }
                ),
                ConditionExpression="attribute_not_exists(sk) OR #run <= :run",
                ExpressionAttributeNames={"#run": "run"},
                ExpressionAttributeValues=to_item({":run": run}),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True
