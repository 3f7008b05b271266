"""The reference inferencer fleet: N worker threads run the ONNX anytime
model on digits requests at a target total rate, apply the thresholds from a
:class:`ThresholdTable`, emit inference events through an
:class:`EventPublisher`, and feed the true labels back through a
:class:`FeedbackSource`.

Per context it records what was served (requests, tokens delivered vs. the
full run, EM of the delivered answer vs. EM of the full run, which is
measured on the side and not counted as served compute), overall and per
time window (``timeline``, for the demo's plot).

>>> stats = FleetStats(window_s=10.0)
>>> stats.record({"task": "t", "domain": "d"}, 0.9, False, 300, 1000, 1, 1, now=0.0)
>>> stats.record({"task": "t", "domain": "d"}, 0.9, True, 1000, 1000, 1, 1, now=1.0)
>>> row = stats.summary()["task=t|domain=d"]
>>> row["requests"], row["token_ratio"], row["em_drop"], row["explored"]
(2, 0.65, 0.0, 1)
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import structlog

from stopwise.daemon.config import Config
from stopwise.daemon.context import ContextKeyer

from .anytime import AnytimeModel, make_request
from .feedback import FeedbackSource
from .publisher import EventPublisher
from .table import ThresholdTable

log = structlog.get_logger("stopwise.clients.inferencer")

KEYER = ContextKeyer(("task", "domain"))


@dataclass
class _Acc:
    requests: int = 0
    explored: int = 0
    tokens: int = 0
    tokens_full: int = 0
    em: int = 0
    em_full: int = 0
    threshold_sum: float = 0.0
    last_threshold: float = 1.0

    def add(self, thr: float, explore: bool, tokens: int, full: int, em: int, em_full: int) -> None:
        self.requests += 1
        self.explored += int(explore)
        self.tokens += tokens
        self.tokens_full += full
        self.em += em
        self.em_full += em_full
        self.threshold_sum += thr
        self.last_threshold = thr

    def merge(self, other: "_Acc") -> None:
        """Add ``other``'s counts and sums into this one (``last_threshold`` is left as is)."""
        for f in fields(self):
            if f.name != "last_threshold":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def row(self) -> dict[str, Any]:
        n = max(1, self.requests)
        return {
            "requests": self.requests, "explored": self.explored,
            "mean_tokens": round(self.tokens / n, 1), "mean_tokens_full": round(self.tokens_full / n, 1),
            "token_ratio": round(self.tokens / max(1, self.tokens_full), 4),
            "savings": round(1.0 - self.tokens / max(1, self.tokens_full), 4),
            "em": round(self.em / n, 4), "em_full": round(self.em_full / n, 4),
            "em_drop": round((self.em_full - self.em) / n, 4),
            "mean_threshold": round(self.threshold_sum / n, 4), "last_threshold": self.last_threshold,
        }


class FleetStats:
    """Thread-safe per-context accumulators, overall and per ``window_s`` window."""

    def __init__(self, window_s: float = 5.0, keyer: ContextKeyer = KEYER) -> None:
        self.window_s = window_s
        self.keyer = keyer
        self._lock = threading.Lock()
        self._total: dict[str, _Acc] = {}
        self._window: dict[str, _Acc] = {}
        self._window_start: float | None = None
        self.timeline: list[dict[str, Any]] = []

    def record(self, context: Mapping[str, str], threshold: float, explore: bool, tokens: int,
               tokens_full: int, em: int, em_full: int, now: float) -> None:
        key = self.keyer.key(context)
        with self._lock:
            if self._window_start is None:
                self._window_start = now
            elif now - self._window_start >= self.window_s:
                self._close_window(now)
            for table in (self._total, self._window):
                acc = table.get(key)
                if acc is None:
                    acc = table[key] = _Acc()
                acc.add(threshold, explore, tokens, tokens_full, em, em_full)

    def _close_window(self, now: float) -> None:
        if self._window:
            self.timeline.append({"t0": self._window_start, "t1": now,
                                  "contexts": {k: a.row() for k, a in sorted(self._window.items())}})
        self._window = {}
        self._window_start = now

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per-context rows plus ``"all"``."""
        with self._lock:
            out = {k: a.row() for k, a in sorted(self._total.items())}
            total = _Acc()
            for a in self._total.values():
                total.merge(a)
            total.last_threshold = round(total.threshold_sum / max(1, total.requests), 4)
            out["all"] = total.row()
            return out

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            timeline = list(self.timeline)
        return {"summary": self.summary(), "timeline": timeline}


def publisher_from_config(cfg: Config, **kw: Any) -> EventPublisher:
    """An :class:`EventPublisher` for the config's broker, input topics and record limits."""
    pc = {"security_protocol": cfg.kafka.security_protocol, **kw.pop("producer_config", {})}
    kw.setdefault("max_record_bytes", cfg.limits.max_record_bytes)
    kw.setdefault("max_checkpoints", cfg.limits.max_checkpoints)
    return EventPublisher(cfg.kafka.bootstrap, cfg.topics.inference, cfg.topics.feedback,
                          producer_config=pc, **kw)


def table_from_config(cfg: Config, **kw: Any) -> ThresholdTable:
    """A :class:`ThresholdTable` for the config's thresholds topic, dimensions, default and HMAC key."""
    cc = {"security_protocol": cfg.kafka.security_protocol, **kw.pop("consumer_config", {})}
    return ThresholdTable(cfg.kafka.bootstrap, cfg.topics.thresholds, dimensions=cfg.context.dimensions,
                          default_threshold=cfg.context.default_threshold,
                          hmac_key=cfg.security.hmac_key(), allow_unsigned=cfg.security.allow_unsigned,
                          consumer_config=cc, **kw)


class Fleet:
    """N workers sharing one model, table, publisher and feedback source."""

    def __init__(self, config: Config, *, workers: int = 4, rate: float = 100.0, seed: int = 0,
                 feedback_delay: float = 2.0, feedback_missing: float = 0.0,
                 table: ThresholdTable | None = None, publisher: EventPublisher | None = None,
                 model: AnytimeModel | None = None, clock: Callable[[], float] = time.time,
                 window_s: float = 5.0, stats_file: str | Path | None = None,
                 stats_interval_s: float = 2.0, measure_full: bool = True) -> None:
        if workers < 1 or rate <= 0:
            raise ValueError("workers must be >= 1 and rate > 0")
        self.config = config
        self.workers, self.rate, self.seed = workers, rate, seed
        self.model = model or AnytimeModel.load()
        self._own_table = table is None
        self._own_pub = publisher is None
        self.table = table if table is not None else table_from_config(config)
        self.publisher = publisher if publisher is not None else publisher_from_config(config)
        self.clock = clock
        self.feedback = FeedbackSource(lambda f: self.publisher.feedback(**f), delay_s=feedback_delay,
                                       missing=feedback_missing, clock=clock)
        self.stats = FleetStats(window_s)
        self.stats_file = Path(stats_file) if stats_file else None
        self.stats_interval_s = stats_interval_s
        self.measure_full = measure_full
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0
        self.errors = 0
        self.started_at = 0.0

    # ------------------------------------------------------------ one request
    def serve(self, i: int) -> dict[str, Any]:
        """Serve request ``i`` of this fleet's stream: decide, run, emit; return the event fields."""
        req = make_request(self.seed, i)
        d = self.table.decide(req.request_id, req.context)
        res = self.model.run(req.x, d.threshold, d.explore)
        now = self.clock()
        full_tokens = self.model.cumulative_tokens[-1]
        ev = {
            "request_id": req.request_id, "ts": now, "context": req.context, "features": req.features,
            "threshold": d.threshold, "threshold_version": d.version, "explore": d.explore,
            "propensity": d.propensity, "stop_index": res.stop_index, "tokens_used": res.tokens,
            "tokens_budget": full_tokens, "checkpoints": res.checkpoints, "complete": res.complete,
        }
        self.publisher.inference(**ev)
        gold = str(req.label)
        em = int(res.answer == gold)
        self.feedback.schedule(req.request_id, em=em, gold_answer_hash=gold, now=now)
        if self.measure_full:  # measured on the side, not served compute
            full_answer = res.checkpoints[-1][2] if res.complete else self.model.run(req.x).answer
            em_full = int(full_answer == gold)
        else:
            em_full = em
        self.stats.record(req.context, d.threshold, d.explore, res.tokens, full_tokens, em, em_full, now)
        return ev

    # --------------------------------------------------------------- workers
    def _ticket(self) -> int:
        with self._lock:
            i = self._next
            self._next += 1
            return i

    def _work(self) -> None:
        while not self._stop.is_set():
            i = self._ticket()
            due = self._t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                self.serve(i)
            except Exception as exc:  # noqa: BLE001 - a worker keeps serving
                self.errors += 1
                if self.errors <= 5 or self.errors % 1000 == 0:
                    log.exception("inferencer_request_failed", error=str(exc), errors=self.errors)

    def start(self) -> "Fleet":
        if self._own_table:
            self.table.start()
        # warm up (data import, pools, onnxruntime first run) before the pacing clock starts
        warm = make_request(self.seed, 0)
        self.model.run(warm.x)
        self.feedback.start()
        self._t0 = time.monotonic()
        self.started_at = self.clock()
        for w in range(self.workers):
            t = threading.Thread(target=self._work, name=f"stopwise-worker-{w}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, flush_timeout: float = 10.0) -> dict[str, Any]:
        """Stop the workers, send due feedback, flush; return the stats dict."""
        self._stop.set()
        for t in self._threads:
            t.join(10.0)
        self._threads.clear()
        self.feedback.stop(drain=False)
        self.feedback.pump()
        remaining = self.publisher.close(flush_timeout) if self._own_pub else self.publisher.flush(flush_timeout)
        if self._own_table:
            self.table.stop()
        out = self.snapshot()
        out["undelivered"] = remaining
        self.write_stats(out)
        return out

    @property
    def served(self) -> int:
        return self.stats.summary()["all"]["requests"]

    def snapshot(self) -> dict[str, Any]:
        d = self.stats.to_dict()
        d.update({"started_at": self.started_at, "now": self.clock(), "workers": self.workers,
                  "rate": self.rate, "errors": self.errors, "dropped": self.publisher.dropped,
                  "table_ready": self.table.ready.is_set(), "table_rejected": self.table.rejected,
                  "feedback_pending": self.feedback.pending()})
        return d

    def write_stats(self, data: dict[str, Any] | None = None) -> None:
        """Atomically (re)write the stats file, if one is configured."""
        if self.stats_file is None:
            return
        data = data if data is not None else self.snapshot()
        self.stats_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_file.with_suffix(self.stats_file.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.stats_file)

    def run(self, duration: float, stop_event: threading.Event | None = None,
            on_tick: Callable[["Fleet"], None] | None = None) -> dict[str, Any]:
        """Serve for ``duration`` seconds (or until ``stop_event``); return the stats."""
        self.start()
        end = time.monotonic() + duration
        stop_event = stop_event or threading.Event()
        try:
            while time.monotonic() < end and not stop_event.is_set():
                stop_event.wait(min(self.stats_interval_s, max(0.0, end - time.monotonic())))
                self.write_stats()
                if on_tick is not None:
                    on_tick(self)
        finally:
            result = self.stop()
        return result
