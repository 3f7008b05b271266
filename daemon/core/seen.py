"""A compact memory of recently seen request ids, oldest first.

Ids are kept as 64-bit blake2b hashes (collision odds ~ n^2 / 2^65: about
1e-10 for 100k ids) with the time they were added; pickled as two packed
arrays (16 bytes per id), so snapshots stay small.

>>> s = RecentIds(cap=2)
>>> s.add("a", 1.0); s.add("b", 2.0); s.add("c", 3.0)
>>> "a" in s, "b" in s, "c" in s, len(s)
(False, True, True, 2)
>>> s.expire_before(2.5), "b" in s, len(s)
(1, False, 1)
"""

from __future__ import annotations

import hashlib
from array import array
from collections import deque


def id_hash(request_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class RecentIds:
    """Membership + insertion order + cap + expiry by time."""

    def __init__(self, cap: int) -> None:
        self.cap = int(cap)
        self._order: deque = deque()   # (hash, time), oldest first
        self._set: set[int] = set()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, request_id: str) -> bool:
        return id_hash(request_id) in self._set

    def add(self, request_id: str, now: float) -> None:
        h = id_hash(request_id)
        if h in self._set:
            return
        self._set.add(h)
        self._order.append((h, now))
        while len(self._order) > self.cap:
            old, _ = self._order.popleft()
            self._set.discard(old)

    def expire_before(self, cutoff: float) -> int:
        """Forget ids added at or before ``cutoff``; return how many."""
        n = 0
        while self._order and self._order[0][1] <= cutoff:
            old, _ = self._order.popleft()
            self._set.discard(old)
            n += 1
        return n

    def __getstate__(self):
        hashes = array("Q", (h for h, _ in self._order))
        times = array("d", (t for _, t in self._order))
        return (self.cap, hashes.tobytes(), times.tobytes())

    def __setstate__(self, state) -> None:
        self.cap, hb, tb = state
        hashes, times = array("Q"), array("d")
        hashes.frombytes(hb)
        times.frombytes(tb)
        self._order = deque(zip(hashes, times))
        self._set = set(hashes)
