"""ThresholdTable: the inferencer's in-memory view of the compacted
thresholds topic, with lock-free lookups.

A background thread with its own group-less consumer assigns every partition
of the thresholds topic, reads from the beginning and applies updates and
tombstones (null value = delete). Each applied batch builds a NEW dict which
is published by a single attribute assignment, so ``get`` never takes a lock
and never sees a half-applied batch. ``ready`` is set once the thread has
caught up to the high watermarks observed when it connected. If the broker
goes away, lookups keep serving the last good table (kafka-python reconnects
on its own; a consumer that errors out is rebuilt with backoff).

``get(context)`` walks the fallback chain (``daemon.context.parents``: the
most specific key, its parents, ``*``), skipping records past
``expires_at``; ``None`` means "use the configured default".

A table needs the daemon's HMAC key, or an explicit ``allow_unsigned=True``
(then any writer to the topic moves thresholds). With a key, records whose
signature does not verify (unsigned or forged) are rejected and counted
(``.rejected``), and so are tombstones (a null value carries no signature,
and stopwise never deletes a context's record: ``.tombstones_ignored``).

>>> t = ThresholdTable("127.0.0.1:1", "thr", dimensions=("task", "domain"), clock=lambda: 100.0,
...                    allow_unsigned=True)
>>> rec = {"v": 1, "context": "task=qa", "threshold": 0.9, "explore_rate": 0.1, "version": 3,
...        "issued_at": 0.0, "expires_at": 200.0, "policy": "reference"}
>>> t.apply([("task=qa", json.dumps(rec).encode())])
1
>>> t.get({"task": "qa", "domain": "finance"}).threshold
0.9
>>> d = t.decide("req-1", {"task": "qa", "domain": "finance"})
>>> d.threshold, d.version, d.context_key, d.source
(0.9, 3, 'task=qa|domain=finance', 'task=qa')
>>> t.decide("req-1", {"task": "other"}).threshold
1.0
>>> t.apply([("task=qa", None)]), t.get("task=qa")
(1, None)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.examples import context_key
from stopwise.daemon.records import ThresholdRecord
from stopwise.daemon.signing import verify_record
from stopwise.daemon.lookup import draw, in_force, lookup
from stopwise.daemon.stoprule import NO_EARLY_STOP

log = structlog.get_logger("stopwise.clients.table")


@dataclass(frozen=True, slots=True)
class StopDecision:
    """What an inferencer applies to one request."""

    threshold: float
    explore: bool
    propensity: float
    version: int
    context_key: str       # the request's canonical context key
    source: str = ""       # key of the record applied ('' = configured default)


class _Snapshot:
    """An immutable table (swapped whole, so lookups never see half a batch)
    plus its lookup cache (key -> records along its chain, ``lookup.in_force``)."""

    __slots__ = ("table", "chains")

    def __init__(self, table: Mapping[str, ThresholdRecord]) -> None:
        self.table = MappingProxyType(dict(table))
        self.chains: dict[str, tuple[ThresholdRecord, ...]] = {}


def _default_consumer(**kw: Any):
    from kafka import KafkaConsumer

    return KafkaConsumer(**kw)


class ThresholdTable:
    """Latest threshold record per context, tailed from a compacted topic."""

    def __init__(self, bootstrap: str, topic: str, *, dimensions: tuple[str, ...] | list[str],
                 default_threshold: float = NO_EARLY_STOP, default_explore_rate: float = 0.0,
                 hmac_key: bytes | None = None, allow_unsigned: bool = False,
                 clock: Callable[[], float] = time.time,
                 consumer_factory: Callable[..., Any] | None = None,
                 consumer_config: dict[str, Any] | None = None,
                 registry: CollectorRegistry | None = None,
                 poll_timeout_ms: int = 200, retry_backoff_s: tuple[float, float] = (0.5, 5.0),
                 max_record_bytes: int = 1_000_000) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.keyer = ContextKeyer(tuple(dimensions))
        self.default_threshold = float(default_threshold)
        self.default_explore_rate = float(default_explore_rate)
        if hmac_key is not None and not isinstance(hmac_key, bytes):
            raise TypeError(f"hmac_key must be bytes (the key file's text, stripped), not {type(hmac_key).__name__}")
        if not hmac_key and allow_unsigned is not True:
            raise ValueError("ThresholdTable needs hmac_key (the daemon's signing key) or an explicit "
                             "allow_unsigned=True: without a key, anyone who can write to the thresholds "
                             "topic moves thresholds")
        self._key = hmac_key or None
        self._clock = clock
        self._factory = consumer_factory or _default_consumer
        self._consumer_config = {"bootstrap_servers": bootstrap, "group_id": None,
                                 "enable_auto_commit": False, "auto_offset_reset": "earliest",
                                 "bootstrap_timeout_ms": 3000, "request_timeout_ms": 10000,
                                 "client_id": "stopwise-table", **(consumer_config or {})}
        self._poll_ms = poll_timeout_ms
        self._backoff = retry_backoff_s
        self._max_bytes = max_record_bytes
        self._snap = _Snapshot({})
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rejected = 0          # signature did not verify (unsigned or forged), with a key
        self.tombstones_ignored = 0  # null values ignored, with a key (unsigned deletes)
        self.invalid = 0           # not a valid threshold record
        self.applied = 0           # updates + tombstones applied
        self.last_update: float | None = None
        reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._m_rejected = Counter("stopwise_table_rejected",
                                   "Threshold records rejected (bad signature; tombstones with a key)", registry=reg)
        self._m_invalid = Counter("stopwise_table_invalid", "Undecodable threshold records", registry=reg)
        self._m_entries = Gauge("stopwise_table_entries", "Contexts in the threshold table", registry=reg)
        self._m_entries.set_function(lambda: len(self._snap.table))

    # ------------------------------------------------------------- lookups
    @property
    def table(self) -> Mapping[str, ThresholdRecord]:
        """The current immutable mapping context key -> record (expired ones included)."""
        return self._snap.table

    def get(self, context: Mapping[str, str] | str) -> ThresholdRecord | None:
        """The record in force for ``context`` (a dict of dimensions or a
        canonical key): the most specific unexpired one along the fallback
        chain (:func:`stopwise.daemon.lookup.in_force`, the simulator's rule
        too), or ``None`` (= the configured default). Lock-free."""
        key = context if isinstance(context, str) else self.key(context)
        snap = self._snap
        return in_force(snap.table, key, self._clock(), snap.chains)

    def key(self, context: Mapping[str, str]) -> str:
        """The canonical key of a context dict (``ContextKeyer.key``), memoised
        (``core.examples.context_key``)."""
        return context_key(self.keyer, context)

    def decide(self, request_id: str, context: Mapping[str, str] | str) -> StopDecision:
        """Threshold, exploration draw and its propensity for one request
        (:func:`stopwise.daemon.lookup.lookup` and :func:`~stopwise.daemon.lookup.draw`,
        exactly as the simulator applies them)."""
        key = context if isinstance(context, str) else self.key(context)
        snap = self._snap
        thr, rate, ver, src = lookup(snap.table, key, self._clock(), self.default_threshold,
                                     self.default_explore_rate, snap.chains)
        ex, prop = draw(request_id, rate)
        return StopDecision(thr, ex, prop, ver, key, src)

    # -------------------------------------------------------------- updates
    def apply(self, items: Iterable[tuple[str | bytes | None, bytes | None]]) -> int:
        """Apply ``(key, value)`` messages (value ``None`` = tombstone) and
        swap in the new table; return how many changed it. Used by the
        background thread; callable directly (tests, replays)."""
        table = dict(self._snap.table)
        n = self._apply_into(table, items)
        if n:
            self._snap = _Snapshot(table)
            self.last_update = self._clock()
        return n

    def _apply_into(self, table: dict[str, ThresholdRecord], items: Iterable[tuple[Any, bytes | None]]) -> int:
        n = 0
        for key, value in items:
            k = key.decode("utf-8", "replace") if isinstance(key, (bytes, bytearray)) else key
            if value is None:
                if self._key is not None:
                    self.tombstones_ignored += 1
                    self._m_rejected.inc()
                    log.warning("threshold_tombstone_ignored", key=k, why="unsigned delete with a key configured")
                elif k is not None and table.pop(k, None) is not None:
                    n += 1
                continue
            rec = self._decode(k, value)
            if rec is not None:
                table[rec.context] = rec
                n += 1
        self.applied += n
        return n

    def _decode(self, key: str | None, value: bytes) -> ThresholdRecord | None:
        try:
            if len(value) > self._max_bytes:
                raise ValueError(f"{len(value)} bytes > {self._max_bytes}")
            obj = json.loads(value)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if not verify_record(obj, self._key):
                self.rejected += 1
                self._m_rejected.inc()
                log.warning("threshold_record_rejected", reason="bad_signature", key=key,
                            context=obj.get("context"), version=obj.get("version"))
                return None
            rec = ThresholdRecord.model_validate(obj)
            if key is not None and rec.context != key:
                raise ValueError(f"record context {rec.context!r} != message key {key!r}")
            return rec
        except ValueError as exc:  # json and pydantic errors are ValueErrors
            self.invalid += 1
            self._m_invalid.inc()
            log.warning("threshold_record_invalid", key=key, error=str(exc).splitlines()[0][:200])
            return None

    # ---------------------------------------------------------- background
    def start(self) -> "ThresholdTable":
        """Start the background reader (idempotent); returns self."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="stopwise-table", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader; the last table keeps serving lookups."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until caught up (or ``timeout``); return whether ready."""
        return self.ready.wait(timeout)

    def __enter__(self) -> "ThresholdTable":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        backoff = self._backoff[0]
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._factory(**self._consumer_config)
                self._follow(consumer)
                backoff = self._backoff[0]
            except Exception as exc:  # noqa: BLE001 - keep serving the last table, retry
                log.warning("threshold_table_reader_error", error=f"{type(exc).__name__}: {exc}"[:300],
                            retry_in_s=backoff)
                self._stop.wait(backoff)
                backoff = min(self._backoff[1], backoff * 2)
            finally:
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # noqa: BLE001
                        pass

    def _follow(self, consumer: Any) -> None:
        from kafka import TopicPartition

        parts = consumer.partitions_for_topic(self.topic)
        if not parts:
            raise LookupError(f"topic {self.topic!r} has no partitions (not created yet?)")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        # (re)building: read into a private dict and swap only once caught up,
        # so a reconnect never exposes a partial table
        building: dict[str, ThresholdRecord] | None = {}
        todo = {tp for tp in tps if ends.get(tp, 0) > 0}
        while not self._stop.is_set():
            batch = consumer.poll(timeout_ms=self._poll_ms, max_records=5000)
            items = [(r.key, r.value) for recs in batch.values() for r in recs]
            if building is None:
                if items:
                    self.apply(items)
                continue
            self._apply_into(building, items)
            todo = {tp for tp in todo if consumer.position(tp, timeout_ms=5000) < ends[tp]}
            if not todo:
                self._snap = _Snapshot(building)
                self.last_update = self._clock()
                building = None
                if not self.ready.is_set():
                    log.info("threshold_table_ready", contexts=len(self._snap.table), topic=self.topic)
                self.ready.set()
