"""A feedback source for the reference inferencer: emits EM (and the gold
answer's hash) from the true labels after a configurable delay, with a
configurable missing rate - the way a grader or a user's action would.

Due events wait in a heap; ``pump(now)`` emits those due (the functional
core, used directly by tests); ``start()`` runs a thread that pumps.

>>> sent = []
>>> fb = FeedbackSource(sent.append, delay_s=2.0, missing=0.0, jitter=0.0, clock=lambda: 0.0)
>>> fb.schedule("r1", em=1, gold_answer_hash="7", now=10.0)
True
>>> fb.pump(11.0), fb.pump(12.0)
(0, 1)
>>> sent[0]["request_id"], sent[0]["em"], sent[0]["ts"]
('r1', 1, 12.0)
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Any, Callable

from stopwise.daemon.stoprule import explore_draw


class FeedbackSource:
    """Schedules feedback events and hands them to ``emit(fields: dict)``
    (e.g. ``EventPublisher.feedback`` via ``lambda f: pub.feedback(**f)``)."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], *, delay_s: float = 2.0,
                 missing: float = 0.0, jitter: float = 0.5, with_gold: bool = True,
                 source: str = "grader", clock: Callable[[], float] = time.time,
                 max_pending: int = 1_000_000) -> None:
        if not 0.0 <= missing <= 1.0:
            raise ValueError(f"missing must be in [0, 1], got {missing}")
        if delay_s < 0 or not 0.0 <= jitter <= 1.0:
            raise ValueError("delay_s must be >= 0 and jitter in [0, 1]")
        self._emit = emit
        self.delay_s, self.missing, self.jitter = delay_s, missing, jitter
        self.with_gold, self.source = with_gold, source
        self._clock = clock
        self._max = max_pending
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scheduled = self.skipped = self.emitted = self.errors = 0

    def schedule(self, request_id: str, *, em: int, gold_answer_hash: str | None = None,
                 now: float | None = None) -> bool:
        """Plan the feedback of one request; False if it is "missing" (never sent)."""
        if self.missing and explore_draw(request_id, b"missing") < self.missing:
            self.skipped += 1
            return False
        t = self._clock() if now is None else now
        spread = (2.0 * explore_draw(request_id, b"delay") - 1.0) * self.jitter
        due = t + self.delay_s * (1.0 + spread)
        fields: dict[str, Any] = {"request_id": request_id, "em": int(em), "source": self.source}
        if self.with_gold and gold_answer_hash is not None:
            fields["gold_answer_hash"] = gold_answer_hash
        with self._lock:
            if len(self._heap) >= self._max:
                self.skipped += 1
                return False
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, fields))
            self.scheduled += 1
        return True

    def pump(self, now: float | None = None) -> int:
        """Emit every event due by ``now``; return how many."""
        t = self._clock() if now is None else now
        due = []
        with self._lock:
            while self._heap and self._heap[0][0] <= t:
                due.append(heapq.heappop(self._heap))
        for when, _, fields in due:
            try:
                self._emit({**fields, "ts": when})
                self.emitted += 1
            except Exception:  # noqa: BLE001 - a bad emit must not stop the source
                self.errors += 1
        return len(due)

    def pending(self) -> int:
        return len(self._heap)

    def start(self, interval_s: float = 0.05) -> "FeedbackSource":
        """Pump from a background thread every ``interval_s``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(interval_s,), name="stopwise-feedback", daemon=True)
            self._thread.start()
        return self

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.pump()

    def stop(self, drain: bool = False) -> None:
        """Stop the thread; with ``drain`` emit everything still pending now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if drain:
            self.pump(float("inf"))
