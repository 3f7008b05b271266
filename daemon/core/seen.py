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

from array import array
from collections import deque
from functools import lru_cache

from ..stoprule import id_hash as _id_hash


id_hash = lru_cache(maxsize=4096)(_id_hash)
"""64-bit blake2b of a request id (memoised: the joiner and the controller
ask for the same id's hash a few times in a row)."""


class RecentIds:
    """Membership + insertion order + cap + expiry by time. Hashes and times
    are kept in two parallel deques of plain numbers (no tuple per id, so
    nothing here for the garbage collector to track)."""

    def __init__(self, cap: int) -> None:
        self.cap = int(cap)
        self._hashes: deque = deque()   # oldest first
        self._times: deque = deque()    # time each id was added, aligned with _hashes
        self._set: set[int] = set()

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, request_id: str) -> bool:
        return id_hash(request_id) in self._set

    def add(self, request_id: str, now: float) -> None:
        h = id_hash(request_id)
        ids = self._set
        if h in ids:
            return
        ids.add(h)
        hashes = self._hashes
        hashes.append(h)
        self._times.append(now)
        if len(hashes) > self.cap:
            times = self._times
            while len(hashes) > self.cap:
                ids.discard(hashes.popleft())
                times.popleft()

    def expire_before(self, cutoff: float) -> int:
        """Forget ids added at or before ``cutoff``; return how many."""
        n = 0
        hashes, times, ids = self._hashes, self._times, self._set
        while times and times[0] <= cutoff:
            times.popleft()
            ids.discard(hashes.popleft())
            n += 1
        return n

    def __getstate__(self):
        return (self.cap, array("Q", self._hashes).tobytes(), array("d", self._times).tobytes())

    def __setstate__(self, state) -> None:
        self.cap, hb, tb = state
        hashes, times = array("Q"), array("d")
        hashes.frombytes(hb)
        times.frombytes(tb)
        self._hashes = deque(hashes)
        self._times = deque(times)
        self._set = set(hashes)
