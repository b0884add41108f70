"""A compact set of row ids: 8 bytes an id, for the millions of rows a run can hold.

A Python set of id strings costs about 100 bytes an id (150 MB for 1.5M rows).
`IdSet` keeps only each id's 64-bit hash, in 256 sorted arrays chosen by the
hash's low byte, so building it never needs more than one small array's worth of
temporary memory, and a lookup is a binary search in one of them.

The sharp edge: two different ids can share a hash. At a million ids on each
side the chance that any remaining row is taken for a done one is about 1 in 20
million; `duplicates()` confirms candidates against the real ids, so duplicate-id
errors are exact. Hashes use Python's `hash()`, so an `IdSet` is only meaningful
inside the process that built it (it is never written to disk).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable

_SHARDS = 256
_MASK = (1 << 64) - 1


def _hash(row_id: str) -> int:
    return hash(row_id) & _MASK


class IdSet:
    """Add ids, `freeze()` once, then test membership."""

    __slots__ = ("_shards", "_frozen", "_size")

    def __init__(self, ids: Iterable[str] = ()):
        self._shards = [array("Q") for _ in range(_SHARDS)]
        self._frozen = False
        self._size = 0
        for row_id in ids:
            self.add(row_id)

    def add(self, row_id: str) -> None:
        h = _hash(row_id)
        self._shards[h & 0xFF].append(h)
        self._size += 1
        self._frozen = False

    def freeze(self) -> IdSet:
        """Sort every shard (one at a time, so the temporary memory stays small)."""
        for i, shard in enumerate(self._shards):
            self._shards[i] = array("Q", sorted(shard))
        self._frozen = True
        return self

    def __contains__(self, row_id: str) -> bool:
        if not self._frozen:
            self.freeze()
        h = hash(row_id) & _MASK  # _hash, inlined: this runs once per row on resume
        shard = self._shards[h & 0xFF]
        i = bisect_left(shard, h)
        return i < len(shard) and shard[i] == h

    def __len__(self) -> int:
        return self._size

    def repeated_hashes(self) -> set[int]:
        """Hashes added more than once: candidates for duplicate ids (confirm with real ids)."""
        if not self._frozen:
            self.freeze()
        repeated = set()
        for shard in self._shards:
            if len(set(shard)) == len(shard):
                continue
            for i in range(1, len(shard)):
                if shard[i] == shard[i - 1]:
                    repeated.add(shard[i])
        return repeated

    @staticmethod
    def hash_of(row_id: str) -> int:
        return _hash(row_id)
