"""Poison input is a line error at validation, on every backend (issue 18): numbers no
backend or DynamoDB can take, prompts past any backend's bound, caps past any real budget.

Before these bounds a 47-digit seed on the endpoint path passed validation and made every
image record unserialisable at finalize; `max_cost_usd: 1e40` crashed ingest."""

from __future__ import annotations

import io
import json
from datetime import date
from typing import Any

import pytest

from imagebatch.errors import ManifestError
from imagebatch.manifest.reader import ManifestFormat, ManifestReader
from imagebatch.manifest.schema import FieldError, InvalidLine, ValidItem
from imagebatch.models.bedrock_models import load_catalogue

TODAY = date(2026, 11, 15)
SAGEMAKER = {"batch": {"backend": "sagemaker", "model": "sd15-inf2"}}
BEDROCK = {"batch": {"backend": "bedrock", "model": "stability.sd3-5-large-v1:0"}}


def _read(*lines: dict[str, Any] | str) -> list[ValidItem | InvalidLine]:
    data = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode()
    reader = ManifestReader(io.BytesIO(data), ManifestFormat.JSONL, load_catalogue(), today=TODAY)
    return list(reader)


def _errors(results: list[ValidItem | InvalidLine]) -> list[tuple[int, str]]:
    found: list[FieldError] = [e for r in results if isinstance(r, InvalidLine) for e in r.errors]
    return [(e.line, e.field) for e in found]


def _item(**fields: Any) -> dict[str, Any]:
    return {"id": "item-1", "prompt": "a red apple", **fields}


@pytest.mark.parametrize("seed", [10**47, 2**32, -1])
@pytest.mark.parametrize("header", [SAGEMAKER, BEDROCK], ids=["sagemaker", "bedrock"])
def test_a_seed_no_backend_takes_is_a_line_error(header: dict[str, Any], seed: int) -> None:
    results = _read(header, _item(seed=seed))
    assert _errors(results) == [(2, "seed")]


def test_the_largest_32_bit_seed_is_taken_by_the_endpoint() -> None:
    results = _read(SAGEMAKER, _item(seed=2**32 - 1))
    assert isinstance(results[0], ValidItem)


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_prompt_past_every_backends_bound_is_a_line_error_on_the_endpoint(field: str) -> None:
    results = _read(SAGEMAKER, _item(**{field: "a" * 200_000}))
    assert _errors(results) == [(2, field)]


def test_a_prompt_at_the_bound_is_taken_by_the_endpoint() -> None:
    results = _read(SAGEMAKER, _item(prompt="a" * 10_000, negative_prompt="b" * 10_000))
    assert isinstance(results[0], ValidItem)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_cost_usd", 1e40),
        ("max_cost_usd", "1e40"),
        ("max_cost_usd", 10**9 + 1),
        ("max_cost_usd", "1.00000000000000000000000000000000000000001"),
        ("deadline_minutes", 1e40),
    ],
)
def test_a_number_past_what_a_batch_can_hold_rejects_the_header(setting: str, value: Any) -> None:
    header = {"batch": {"backend": "bedrock", setting: value}}
    with pytest.raises(ManifestError) as raised:
        _read(header, _item())
    assert (raised.value.line, raised.value.field) == (1, f"batch.{setting}")


def test_a_billion_dollar_cap_is_still_a_cap() -> None:
    results = _read({"batch": {"backend": "bedrock", "max_cost_usd": 10**9}}, _item())
    assert isinstance(results[0], ValidItem)
