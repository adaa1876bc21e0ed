"""The record keys one run has read, in 8 bytes a key: for the duplicate check and for finding vanished records.

A Python set of 10 million key strings takes about 1 GB; this keeps each key's 64-bit hash in sorted NumPy arrays
(80 MB for 10 million), merged like a log-structured tree so that adding a batch and asking about one both cost
O(batch x log n). The hash is Python's own `hash(str)` (SipHash, randomised per process, which is all a set that
lives for one run needs). Two different keys share a hash with probability about n^2 / 2^65: 3 in a million for a
run of 10 million records; the cost of such a collision is one record failed as a duplicate (or one vanished
record's delete left for the next full diff), never a record sent twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class KeySet:
    """Keys added a batch at a time; `add` says which of a batch were seen before (earlier in it, or before it)."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # sorted, unique int64 hashes; each at most half the size of the one before
        self.size = 0

    def add(self, keys: Sequence[str]) -> np.ndarray:
        """Add the keys; a boolean per key: True where the key was already in the set or came earlier in `keys`."""
        hashes = _hashes(keys)
        seen = self._contains(hashes)
        if len(hashes) > 1:
            order = np.argsort(hashes, kind="stable")  # stable: a key's first occurrence sorts first
            ordered = hashes[order]
            repeated = np.zeros(len(hashes), dtype=bool)
            repeated[order[1:]] = ordered[1:] == ordered[:-1]
            seen |= repeated
        new = np.unique(hashes[~seen])
        if len(new):
            self._push(new)
        return seen

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        return self._contains(_hashes(keys))

    def _contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, hashes)
            inside = at < len(run)
            found[inside] |= run[at[inside]] == hashes[inside]
        return found

    def _push(self, new: np.ndarray) -> None:
        self.size += len(new)
        self._runs.append(new)
        # Merge while the newest run is at least half the size of the one before: O(log n) runs, each element
        # merged O(log n) times in all.
        while len(self._runs) > 1 and len(self._runs[-1]) * 2 >= len(self._runs[-2]):
            last = self._runs.pop()
            # The runs are disjoint (a new run holds only unseen hashes) and sorted: timsort merges two sorted runs
            # in linear time.
            merged = np.concatenate((self._runs[-1], last))
            merged.sort(kind="stable")
            self._runs[-1] = merged


def _hashes(keys: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))
