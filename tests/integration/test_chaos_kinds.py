"""Which faults the chaos mode may inject where (imagebatch_local.cloud.chaos): what AWS
does at each call, less what its docstring marks off and why."""

from __future__ import annotations

from imagebatch_local.cloud.chaos import call_kinds


def test_the_chaos_loses_bedrock_replies_at_the_chunk_that_buys_images() -> None:
    # WHEN the kinds at a chunk's Bedrock call are asked for
    kinds = set(call_kinds("GenerateChunkFunction", "bedrock-runtime", "InvokeModel"))

    # THEN a reply lost after Bedrock made the image is among them (charged as rework, an
    # unconfirmed call), as is a read timeout
    assert {"reply-lost", "read-timeout", "throttle"} <= kinds
    # AND no kill while a call is in flight (the time bound keeps a timeout off it)
    assert not {"killed-before", "killed-after"} & kinds


def test_the_chaos_kills_other_functions_anywhere() -> None:
    kinds = set(call_kinds("FinalizeFunction", "dynamodb", "UpdateItem"))
    assert {"killed-before", "killed-after", "reply-lost"} <= kinds


def test_the_chaos_kills_the_chunk_that_buys_images_at_its_commit() -> None:
    # stopped before its commit, its PNGs are recorded by the chunk's next attempt
    kinds = set(call_kinds("GenerateChunkFunction", "dynamodb", "TransactWriteItems"))
    assert {"killed-before", "killed-after"} <= kinds
