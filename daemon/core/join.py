"""Join inference and feedback events by request_id.

Rules (DESIGN section 3; issue 3):

* either arrival order: the first half waits in a pending table, the second
  half completes it and yields one :class:`LabelledExample`;
* label-free evidence: an inference event that arrives first ALSO yields at
  once its unlabelled example (``em`` and ``gold_answer_hash`` None), so
  the learner never waits for feedback that may come late or never; the
  labelled example that completes it later is marked ``followup`` (the
  learner only refines the evidence it already holds with the label);
* TTL: a pending half older than ``ttl_s`` (by the ``now`` passed in,
  made monotone: a step back of the clock counts as no time passing) is
  dropped by :meth:`Joiner.expire` and counted -- an inference whose
  feedback never came is ``expired_no_feedback`` (its unlabelled evidence
  was learned on arrival; it is never treated as EM=1); a feedback whose inference never came is
  ``expired_no_inference``;
* bounded memory: at most ``max_entries`` pending entries AND at most
  ``max_bytes`` of them (each entry counted at its record's wire size, as
  passed in by the shell, else :func:`estimate_bytes`), so a snapshot of the
  state stays bounded in bytes (issue 13: 150k pending inference events per
  shard made a 16.9 MB snapshot); on overflow the oldest is evicted first and
  counted in ``evicted`` (``pending_bytes`` is the current total);
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
>>> [(ex.request_id, ex.em, ex.followup) for ex in j.add_inference(inf, now=2.0)], len(j)
([('r1', 1, False)], 0)
>>> j.add_feedback(FeedbackEvent(request_id="r1", ts=3.0, em=0), now=3.0), j.stats.duplicates
([], 1)
>>> inf2 = inf.model_copy(update={"request_id": "r2"})
>>> [(ex.em, ex.followup) for ex in j.add_inference(inf2, now=4.0)]   # unlabelled, at once
[(None, False)]
>>> [(ex.em, ex.followup) for ex in j.add_feedback(FeedbackEvent(request_id="r2", ts=5.0, em=1), now=5.0)]
[(1, True)]
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
    unlabelled: int = 0
    pending_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def estimate_bytes(ev) -> int:
    """About the wire (JSON) size of an event, without serializing it.

    >>> from stopwise.daemon.records import FeedbackEvent
    >>> fb = FeedbackEvent(request_id="r1", ts=1.0, em=1)
    >>> estimate_bytes(fb) >= len(fb.to_bytes())
    True
    """
    n = 120 + len(ev.request_id)
    if isinstance(ev, InferenceEvent):
        n += 220 + sum(len(h) + 32 for _, _, h in ev.checkpoints)
        n += sum(len(k) + len(v) + 6 for k, v in ev.context.items()) + sum(len(k) + 28 for k in ev.features)
    else:
        n += len(ev.gold_answer_hash or "") + len(ev.source)
    return n


DEFAULT_MAX_BYTES = 48 * 1024 * 1024


class Joiner:
    """Pending halves keyed by request_id, oldest first (see module doc)."""

    def __init__(self, ttl_s: float, max_entries: int, keyer: ContextKeyer,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._bytes = 0   # sum of the pending entries' sizes
        self.keyer = keyer
        self.stats = JoinStats()
        # request_id -> [inference | None, feedback | None, first_seen, size in bytes]
        self._pending: OrderedDict[str, list] = OrderedDict()
        # joined request_ids (remembered for ttl_s, capped), compact
        self._done = RecentIds(self.max_entries)
        self._clock = float("-inf")

    @classmethod
    def from_config(cls, config) -> "Joiner":
        """The joiner ``config.join`` and ``config.context.dimensions`` describe."""
        return cls(config.join.ttl_s, config.join.max_entries, ContextKeyer(config.context.dimensions),
                   config.join_max_bytes())

    def reconfigure(self, config) -> None:
        """Apply a reloaded ``config.join`` (TTL, entry and byte caps; pending halves are kept
        until the next arrival evicts down to the caps)."""
        self.ttl_s, self.max_entries = float(config.join.ttl_s), int(config.join.max_entries)
        self.max_bytes = int(config.join_max_bytes())

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Sum of the pending entries' sizes (what ``max_bytes`` caps)."""
        return self._bytes

    def add_inference(self, ev: InferenceEvent, now: float, size: int | None = None) -> list[LabelledExample]:
        """``size``: the record's wire size, when known (else estimated)."""
        return self._add(ev.request_id, 0, ev, now, size)

    def add_feedback(self, ev: FeedbackEvent, now: float, size: int | None = None) -> list[LabelledExample]:
        return self._add(ev.request_id, 1, ev, now, size)

    def shed(self, max_bytes: int) -> int:
        """Evict the oldest pending entries until at most ``max_bytes`` remain
        (the snapshot writer's last resort); return how many were evicted."""
        n = 0
        total = self.pending_bytes
        while self._pending and total > max_bytes:
            total -= _size(self._pending.popitem(last=False)[1])
            n += 1
        self._bytes = total
        self.stats.evicted += n
        self.stats.pending, self.stats.pending_bytes = len(self._pending), total
        return n

    def _add(self, rid: str, slot: int, ev, now: float, size: int | None = None) -> list[LabelledExample]:
        now = self._clock = max(self._clock, now)  # monotone: a clock step back is "no time passed"
        total = self._bytes
        if rid in self._done:
            self.stats.duplicates += 1
            return []
        entry = self._pending.get(rid)
        if entry is None:
            entry = [None, None, now, estimate_bytes(ev) if size is None else int(size)]
            entry[slot] = ev
            self._pending[rid] = entry
            total += entry[3]
            pending, max_entries, max_bytes = self._pending, self.max_entries, self.max_bytes
            while pending and (len(pending) > max_entries or total > max_bytes):  # oldest first
                total -= _size(pending.popitem(last=False)[1])
                self.stats.evicted += 1
            self._bytes = total
            self.stats.pending, self.stats.pending_bytes = len(pending), total
            if slot == 0:
                self.stats.unlabelled += 1
                return [from_events(ev, None, self.keyer)]
            return []
        if entry[slot] is not None:
            self.stats.duplicates += 1
            return []
        entry[slot] = ev
        del self._pending[rid]
        self._bytes = total - _size(entry)
        self._remember(rid, now)
        self.stats.joined += 1
        self.stats.pending, self.stats.pending_bytes = len(self._pending), self._bytes
        # the inference came first (slot 1 completes it): its evidence was already emitted
        return [from_events(entry[0], entry[1], self.keyer, followup=slot == 1)]

    def _remember(self, rid: str, now: float) -> None:
        self._done.add(rid, now)

    def expire(self, now: float) -> int:
        """Drop pending halves older than the TTL; return how many."""
        cutoff = now - self.ttl_s
        n = 0
        total = self.pending_bytes
        while self._pending:
            rid, entry = next(iter(self._pending.items()))
            if entry[2] > cutoff:
                break
            self._pending.popitem(last=False)
            total -= _size(entry)
            if entry[0] is not None:
                self.stats.expired_no_feedback += 1
            else:
                self.stats.expired_no_inference += 1
            n += 1
        self._done.expire_before(cutoff)
        self._bytes = total
        self.stats.pending, self.stats.pending_bytes = len(self._pending), total
        return n


def _size(entry: list) -> int:
    """An entry's size in bytes."""
    return entry[3]
