"""What the Distributed Map collects from its children must fit Step Functions' payload limit.

Without a ResultWriter a Distributed Map gathers every child execution's output into its own
result, which, like every state's input and output, must fit 256 KiB; past that the state fails
with States.DataLimitExceeded, whatever its ResultPath does with the result afterwards. This
test computes each child's output from the item processor's own definition (InputPath,
ResultSelector, ResultPath, OutputPath of the state that ends the child), with a worst-case item
and task result, and checks a 200,000-image batch (4,000 chunks of 50) fits.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from imagebatch.models.records import ChunkResult

ASL_PATH = Path(__file__).resolve().parents[2] / "statemachine" / "batch.asl.json"
PAYLOAD_LIMIT_BYTES = 256 * 1024
CHUNKS = 200_000 // 50
# A Lambda error's Cause is its error JSON: a ChunkUnfinished one names every unfinished image.
WORST_CAUSE = json.dumps(
    {
        "errorType": "ChunkUnfinished",
        "errorMessage": json.dumps(
            {"unfinished": {f"item-{i:03d}-{n}": "throttled" for i in range(50) for n in (1,)}}
        ),
    }
)


def _get(document: Any, path: str) -> Any:
    if path == "$":
        return document
    node = document
    for part in path.removeprefix("$.").split("."):
        node = node[part]
    return node


def _set(document: Any, path: str, value: Any) -> Any:
    if path == "$":
        return value
    updated = copy.deepcopy(document)
    node = updated
    parts = path.removeprefix("$.").split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return updated


def _select(template: dict[str, Any], source: Any) -> dict[str, Any]:
    """A payload template (ResultSelector/Parameters) with plain '$...' paths."""
    return {
        (key[:-2] if key.endswith(".$") else key): (
            _get(source, value) if key.endswith(".$") else value
        )
        for key, value in template.items()
    }


def state_output(state: dict[str, Any], state_input: Any, raw_result: Any) -> Any:
    """A Task state's output by the ASL input/output processing rules."""
    effective_input = {} if state.get("InputPath", "$") is None else state_input
    result = raw_result
    if "ResultSelector" in state:
        result = _select(state["ResultSelector"], result)
    result_path = state.get("ResultPath", "$")
    combined = (
        effective_input if result_path is None else _set(effective_input, result_path, result)
    )
    output_path = state.get("OutputPath", "$")
    return {} if output_path is None else _get(combined, output_path)


def _item_input() -> dict[str, Any]:
    """The Map's ItemSelector output for a chunk, with the longest values a batch can carry."""
    return {
        "batch_id": "b" * 80,  # an execution name is at most 80 characters
        "bucket": "d" * 63,
        "chunk_concurrency": 32,
        "backend": "sagemaker",
        "chunk": {"chunk_id": "99999", "key": f"chunks/{'b' * 80}/99999.json", "images": 90},
    }


def _raw_results() -> dict[str, Any]:
    chunk_result = ChunkResult(
        chunk_id="99999", succeeded=90, failed=90, cost_micro_usd=10**12, skipped_already_done=90
    ).model_dump(mode="json")
    lambda_invoke = {
        "ExecutedVersion": "$LATEST",
        "Payload": chunk_result,
        "SdkHttpMetadata": {"HttpStatusCode": 200},
        "StatusCode": 200,
    }
    return {
        "GenerateChunk": lambda_invoke,
        # waitForTaskToken: the result is SendTaskSuccess's output, a ChunkResult.
        "SubmitChunk": chunk_result,
        # putItem answers with response metadata; the state discards it anyway.
        "RecordChunkFailure": {"SdkHttpMetadata": {"HttpStatusCode": 200}},
    }


def _processor() -> dict[str, Any]:
    definition = json.loads(ASL_PATH.read_text(encoding="utf-8"))
    processor: dict[str, Any] = definition["States"]["GenerateChunks"]["ItemProcessor"]
    return processor


def child_outputs() -> dict[str, Any]:
    """The output of each child execution, by the state that ends it."""
    states = _processor()["States"]
    raw = _raw_results()
    item = _item_input()
    failed_item = {**item, "error": {"Error": "ChunkUnfinished", "Cause": WORST_CAUSE}}
    ends = {name: state for name, state in states.items() if state.get("End")}
    assert set(ends) == set(raw), f"a child can end in {sorted(ends)}: give each a result"
    return {
        name: state_output(state, failed_item if name == "RecordChunkFailure" else item, raw[name])
        for name, state in ends.items()
    }


def test_the_evaluator_follows_the_asl_rules() -> None:
    # Guards the helper the size check relies on (ASL spec, input and output processing).
    state_input = {"a": 1}
    task = {"ResultSelector": {"r.$": "$.Payload"}, "OutputPath": "$.r"}
    assert state_output(task, state_input, {"Payload": {"x": 2}}) == {"x": 2}
    assert state_output({"ResultPath": None}, state_input, {"x": 2}) == {"a": 1}
    assert state_output({"ResultPath": "$.b"}, state_input, 3) == {"a": 1, "b": 3}
    assert state_output({"ResultPath": None, "OutputPath": None}, state_input, 3) == {}


@pytest.mark.parametrize("chunks", [CHUNKS])
def test_a_200000_image_batch_fits_the_maps_collected_output(chunks: int) -> None:
    # GIVEN every way a child execution can end, with its largest output
    outputs = child_outputs()
    largest = max(outputs.values(), key=lambda output: len(json.dumps(output)))

    # WHEN the Map collects one output per chunk of a 200,000-image batch (4,000 chunks)
    collected = json.dumps([largest] * chunks, separators=(",", ":"))

    # THEN the collected result fits the 256 KiB payload limit
    sizes = {name: len(json.dumps(output)) for name, output in outputs.items()}
    assert len(collected.encode()) <= PAYLOAD_LIMIT_BYTES, (
        f"{chunks} children, {len(collected)} bytes collected: States.DataLimitExceeded; "
        f"bytes per child by the state that ends it: {sizes}"
    )


def test_finalize_reads_nothing_the_map_collected() -> None:
    # The Map discards its result: FinalizeBatch sees the execution input (and map_error).
    definition = json.loads(ASL_PATH.read_text(encoding="utf-8"))
    assert definition["States"]["GenerateChunks"]["ResultPath"] is None
    assert "ResultWriter" not in definition["States"]["GenerateChunks"]
