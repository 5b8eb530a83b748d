"""The first line of each item id, in about 12 bytes an id.

A 1,000,000-line manifest must fit one ingest Lambda with room to spare; a dict of id strings
to line numbers took about 125 MB for that many ids. Here each id is kept as its 64-bit
string hash (Python's SipHash, computed in C; salted per process, which is fine for an index
that lives one pass) and its first line, in two flat arrays with open addressing (linear
probing), grown by doubling at three-quarters full.

The cost of that saving: two different ids whose hashes are equal would be reported as a
duplicate. For n ids the odds are about n^2 / 2^65 (1 in 37 million for 1,000,000 ids).
"""

from __future__ import annotations

from array import array

_EMPTY = 0
_MASK64 = (1 << 64) - 1
_FIRST_SIZE = 1 << 12


def _digest(item_id: str) -> int:
    value = hash(item_id) & _MASK64
    # 0 marks an empty slot; the one id that hashes to it shares a slot key with 1.
    return value or 1


class FirstLines:
    """`first_line(id, line)`: the line `id` was first seen on (this line if it is new)."""

    def __init__(self) -> None:
        self._keys = array("Q", [_EMPTY]) * _FIRST_SIZE
        self._lines = array("I", [0]) * _FIRST_SIZE
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first_line(self, item_id: str, line: int) -> int:
        key = _digest(item_id)
        keys = self._keys
        mask = len(keys) - 1
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return self._lines[slot]
            if found == _EMPTY:
                break
            slot = (slot + 1) & mask
        keys[slot] = key
        self._lines[slot] = line
        self._count += 1
        if self._count * 4 > len(keys) * 3:
            self._grow()
        return line

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        size = len(old_keys) * 2
        mask = size - 1
        keys = array("Q", [_EMPTY]) * size
        lines = array("I", [0]) * size
        for key, line in zip(old_keys, old_lines, strict=True):
            if key == _EMPTY:
                continue
            slot = key & mask
            while keys[slot] != _EMPTY:
                slot = (slot + 1) & mask
            keys[slot] = key
            lines[slot] = line
        self._keys, self._lines = keys, lines
