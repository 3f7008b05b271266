"""Join inference and feedback events by request_id.

Rules (DESIGN section 3; issue 3):

* either arrival order: the first half waits in a pending table, the second
  half completes it and yields one :class:`LabelledExample`;
* TTL: a pending half older than ``ttl_s`` (by the ``now`` passed in,
  made monotone: a step back of the clock counts as no time passing) is
  dropped by :meth:`Joiner.expire` and counted -- an inference whose
  feedback never came is ``expired_no_feedback`` and is never learned (never
  treated as EM=1); a feedback whose inference never came is
  ``expired_no_inference``;
* bounded memory: at most ``max_entries`` pending entries; on overflow the
  oldest is evicted first and counted in ``evicted``;
* duplicates are idempotent: a repeated half while pending, or any half of a
  request already joined in the last ``ttl_s`` (the joiner remembers joined
  request_ids as 64-bit hashes, :mod:`.seen`, also capped at
  ``max_entries``), is counted in
  ``duplicates`` and ignored;
* several feedbacks for one request: the FIRST one wins, later ones are
  duplicates (so a label never flips after it was learned).

>>> from stopwise.daemon.records import InferenceEvent, FeedbackEvent
>>> from stopwise.daemon.context import ContextKeyer
>>> j = Joiner(ttl_s=60, max_entries=10, keyer=ContextKeyer(("task",)))
>>> inf = InferenceEvent(request_id="r1", ts=0.0, threshold=1.0, stop_index=0, tokens_used=5,
...     tokens_budget=5, checkpoints=[[5, 0.9, "a"]])
>>> j.add_feedback(FeedbackEvent(request_id="r1", ts=1.0, em=1), now=1.0), len(j)
([], 1)
>>> [ex.request_id for ex in j.add_inference(inf, now=2.0)], len(j)
(['r1'], 0)
>>> j.add_feedback(FeedbackEvent(request_id="r1", ts=3.0, em=0), now=3.0), j.stats.duplicates
([], 1)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

from ..context import ContextKeyer
from ..records import FeedbackEvent, InferenceEvent
from .examples import LabelledExample, from_events
from .seen import RecentIds


@dataclass
class JoinStats:
    """Counters of the joiner (all ints)."""

    joined: int = 0
    pending: int = 0
    duplicates: int = 0
    evicted: int = 0
    expired_no_feedback: int = 0
    expired_no_inference: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Joiner:
    """Pending halves keyed by request_id, oldest first (see module doc)."""

    def __init__(self, ttl_s: float, max_entries: int, keyer: ContextKeyer) -> None:
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self.keyer = keyer
        self.stats = JoinStats()
        # request_id -> [inference | None, feedback | None, first_seen]
        self._pending: OrderedDict[str, list] = OrderedDict()
        # joined request_ids (remembered for ttl_s, capped), compact
        self._done = RecentIds(self.max_entries)
        self._clock = float("-inf")

    @classmethod
    def from_config(cls, config) -> "Joiner":
        """The joiner ``config.join`` and ``config.context.dimensions`` describe."""
        return cls(config.join.ttl_s, config.join.max_entries, ContextKeyer(config.context.dimensions))

    def reconfigure(self, config) -> None:
        """Apply a reloaded ``config.join`` (TTL and entry cap; pending halves are kept)."""
        self.ttl_s, self.max_entries = float(config.join.ttl_s), int(config.join.max_entries)

    def __len__(self) -> int:
        return len(self._pending)

    def add_inference(self, ev: InferenceEvent, now: float) -> list[LabelledExample]:
        return self._add(ev.request_id, 0, ev, now)

    def add_feedback(self, ev: FeedbackEvent, now: float) -> list[LabelledExample]:
        return self._add(ev.request_id, 1, ev, now)

    def _add(self, rid: str, slot: int, ev, now: float) -> list[LabelledExample]:
        now = self._clock = max(self._clock, now)  # monotone: a clock step back is "no time passed"
        if rid in self._done:
            self.stats.duplicates += 1
            return []
        entry = self._pending.get(rid)
        if entry is None:
            entry = [None, None, now]
            entry[slot] = ev
            self._pending[rid] = entry
            while len(self._pending) > self.max_entries:
                self._pending.popitem(last=False)
                self.stats.evicted += 1
            self.stats.pending = len(self._pending)
            return []
        if entry[slot] is not None:
            self.stats.duplicates += 1
            return []
        entry[slot] = ev
        del self._pending[rid]
        self._remember(rid, now)
        self.stats.joined += 1
        self.stats.pending = len(self._pending)
        return [from_events(entry[0], entry[1], self.keyer)]

    def _remember(self, rid: str, now: float) -> None:
        self._done.add(rid, now)

    def expire(self, now: float) -> int:
        """Drop pending halves older than the TTL; return how many."""
        cutoff = now - self.ttl_s
        n = 0
        while self._pending:
            rid, entry = next(iter(self._pending.items()))
            if entry[2] > cutoff:
                break
            self._pending.popitem(last=False)
            if entry[0] is not None:
                self.stats.expired_no_feedback += 1
            else:
                self.stats.expired_no_inference += 1
            n += 1
        self._done.expire_before(cutoff)
        self.stats.pending = len(self._pending)
        return n
