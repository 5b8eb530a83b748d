"""The manifest reader's id index: first lines kept exactly, through growth, in flat memory."""

from __future__ import annotations

import random
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from imagebatch.manifest.id_index import FirstLines


@given(st.lists(st.text(min_size=1, max_size=12), max_size=300))
def test_first_line_is_what_a_dict_would_say(ids: list[str]) -> None:
    index = FirstLines()
    expected: dict[str, int] = {}
    for line, item_id in enumerate(ids, start=2):
        assert index.first_line(item_id, line) == expected.setdefault(item_id, line)
    assert len(index) == len(expected)


def test_growth_keeps_every_first_line() -> None:
    # GIVEN more ids than several doublings of the table hold
    index = FirstLines()
    ids = [f"SKU-{n:07d}" for n in range(50_000)]
    for line, item_id in enumerate(ids, start=1):
        assert index.first_line(item_id, line) == line
    # THEN each repeat, in any order, finds the line its id was first seen on
    shuffled = list(enumerate(ids, start=1))
    random.Random(7).shuffle(shuffled)
    for first, item_id in shuffled[:5_000]:
        assert index.first_line(item_id, 999_999) == first
    assert len(index) == 50_000


def _peak_bytes(keep: object, ids: int) -> int:
    tracemalloc.start()
    try:
        for line in range(ids):
            keep(f"product-{line:08d}-front", line + 1)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bytes_per_id_not_objects_per_id() -> None:
    # GIVEN 200,000 ids kept by the index, and the same kept in a dict (what the reader had)
    index = FirstLines()
    as_dict: dict[str, int] = {}
    index_peak = _peak_bytes(index.first_line, 200_000)
    dict_peak = _peak_bytes(as_dict.setdefault, 200_000)
    # THEN the index needs under a third of the dict's memory, and about 12 bytes a slot
    # (2^19 slots at this size, plus the table it grew from while copying)
    assert index_peak * 3 < dict_peak, (index_peak, dict_peak)
    assert index_peak < 12 * (1 << 19) * 1.6, index_peak
