"""Integration tests run against in-process moto, the local AWS pieces, fakes and the tiny
model; their fixtures live in tests/support/moto_fixtures.py."""

from __future__ import annotations

# Fixtures are found by name in a conftest's namespace: imported, not called here.
from support.cli import no_aws  # noqa: F401
from support.moto_fixtures import (  # noqa: F401
    aws,
    aws_credentials,
    dynamodb_client,
    export_batch,
    ledger_table,
    ledger_table_shape,
    new_ledger_table,
    regional_ledger_table,
    s3_bucket,
    s3_client,
    sfn_client,
)
