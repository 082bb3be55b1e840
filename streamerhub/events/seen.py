"""The message ids a reader saw lately, kept as 64-bit hashes in two preallocated tables.

Why not a dict of the ids: its strings are made while a flood is being parsed, so they sit one
here, one there among the flood's short-lived objects, and each keeps a whole CPython arena
(1 MiB) mapped long after the flood: the ids of the last 20,000 events pinned ~20 MB. Here the
ids are hashed into two fixed arrays allocated once, so remembering them allocates nothing.

Two generations: ids go into `new`; when it holds `keep` of them, `old` is emptied and the two
swap, so the last `keep` to 2 × `keep` ids are remembered. Each table has at least 2 × `keep`
slots (open addressing, linear probing, load ≤ 0.5). Two ids are confused only if their 64-bit
hashes are equal: with 40,000 remembered, a chance of about 2e-15 per message.
"""

from __future__ import annotations

import ctypes
from array import array


class RecentIds:
    """A bounded set of recently seen ids: `add` says whether an id is new."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        slots = 1 << (2 * keep).bit_length()
        self._mask = slots - 1
        self._new, self._old = array("q", bytes(8 * slots)), array("q", bytes(8 * slots))
        self._count = 0

    def add(self, key: str) -> bool:
        """Remember `key`; False when it was already among the recent ones."""
        h = hash(key) or 1  # 0 marks an empty slot
        new = self._new
        slot = _probe(new, self._mask, h)
        if new[slot] == h:
            return False
        old = self._old
        if old[_probe(old, self._mask, h)] == h:
            return False
        new[slot] = h
        self._count += 1
        if self._count >= self.keep:
            self._rotate()
        return True

    def __contains__(self, key: str) -> bool:
        h = hash(key) or 1
        return any(t[_probe(t, self._mask, h)] == h for t in (self._new, self._old))

    def _rotate(self) -> None:
        address, length = self._old.buffer_info()
        ctypes.memset(address, 0, length * self._old.itemsize)
        self._new, self._old = self._old, self._new
        self._count = 0


def _probe(table: array[int], mask: int, h: int) -> int:
    """The slot holding h, or the empty slot where it would go."""
    i = h & mask
    while True:
        value = table[i]
        if value == h or value == 0:
            return i
        i = (i + 1) & mask
