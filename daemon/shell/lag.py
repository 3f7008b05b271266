"""Consumer lag of the daemon's group, measured off the poll thread.

:class:`LagMonitor` runs a daemon thread with its OWN KafkaConsumer: it has the
group id (needed to read the group's committed offsets) but never subscribes
nor is assigned anything, so it never joins the group and cannot trigger a
rebalance. Every ``interval_s`` it reads, for each partition of the inference,
feedback and examples topics, the end offset and the group's committed offset,
and sets ``metrics.consumer_lag{topic, partition}`` to their difference. A
partition the group never committed counts from its beginning offset (the
daemon consumes with ``auto_offset_reset=earliest``).

Broker errors never kill the thread: they are logged, counted in
``stopwise_lag_errors_total`` and retried with exponential backoff (the
consumer is rebuilt after a few failures in a row). Every broker call is
bounded by ``timeout_s``, so :meth:`LagMonitor.stop` returns promptly.

>>> lag_of(end=120, committed=100, beginning=0), lag_of(end=120, committed=None, beginning=20)
(20, 100)
>>> backoff_s(interval_s=5.0, failures=3, max_backoff_s=60.0)
40.0
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import structlog
from kafka import KafkaConsumer, TopicPartition

from ..config import Config
from ..metrics import Metrics
from .kafka_io import client_kwargs

log = structlog.get_logger("stopwise.shell.lag")

REBUILD_AFTER = 3
"""Consecutive failures after which the monitor's consumer is closed and rebuilt."""


def lag_of(end: int, committed: int | None, beginning: int) -> int:
    """Records the group has not committed yet (never negative)."""
    start = beginning if committed is None else committed
    return max(0, int(end) - int(start))


def backoff_s(interval_s: float, failures: int, max_backoff_s: float) -> float:
    """Wait before the next try after ``failures`` consecutive failures."""
    if failures <= 0:
        return interval_s
    return min(max_backoff_s, interval_s * 2 ** min(failures, 16))


def make_lag_consumer(config: Config, timeout_s: float = 5.0) -> KafkaConsumer:
    """A consumer carrying the group id that never subscribes (no membership)."""
    kw = client_kwargs(config)
    kw.update({
        "client_id": f"{config.kafka.client_id}-lag",
        "group_id": config.kafka.group_id,
        "enable_auto_commit": False,
        "bootstrap_timeout_ms": max(1000, int(timeout_s * 1000)),
    })
    return KafkaConsumer(**kw)


def _partitions(consumer: Any, topic: str, timeout_ms: int) -> set[int]:
    """Partition ids of ``topic``; a metadata refresh bounded by ``timeout_ms``.

    kafka-python's ``partitions_for_topic`` waits without limit for metadata
    when the topic is not cached; with kafka-python 3.x internals available we
    refresh with a timeout instead (other consumers: the public call).
    """
    cluster, net, manager = (getattr(consumer, a, None) for a in ("_cluster", "_net", "_manager"))
    if cluster is None or net is None or manager is None:
        return set(consumer.partitions_for_topic(topic) or ())
    parts = cluster.partitions_for_topic(topic)
    if parts is None:
        stash = cluster.need_all_topic_metadata
        cluster.need_all_topic_metadata = True
        try:
            net.run(manager.wait_for, cluster.request_update(), timeout_ms)
        finally:
            cluster.need_all_topic_metadata = stash
        parts = cluster.partitions_for_topic(topic)
    return set(parts or ())


class _Stopped(Exception):
    """stop() was called during a measurement."""


class LagMonitor:
    """Background consumer-lag measurement into ``metrics.consumer_lag``."""

    def __init__(self, config: Config, metrics: Metrics, interval_s: float = 5.0,
                 consumer_factory: Callable[[Config], Any] | None = None, *,
                 timeout_s: float = 5.0, max_backoff_s: float = 60.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.config = config
        self.metrics = metrics
        self.interval_s = float(interval_s)
        self.timeout_s = float(timeout_s)
        self.max_backoff_s = max(float(max_backoff_s), self.interval_s)
        self._factory = consumer_factory or (lambda cfg: make_lag_consumer(cfg, self.timeout_s))
        self._consumer: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_obj: threading.Thread | None = None  # kept after stop() for _check_stop
        self._lock = threading.Lock()
        self._snapshot: dict[tuple[str, int], int] = {}
        self.measurements = 0
        self.failures = 0
        """Consecutive failed measurements (0 after a success)."""

    @property
    def topics(self) -> tuple[str, ...]:
        t = self.config.topics
        return (t.inference, t.feedback, t.examples)

    def start(self) -> None:
        """Start the background thread (idempotent while running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = self._thread_obj = threading.Thread(target=self._run, name="stopwise-lag", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the thread and close its consumer; waits at most ``timeout_s``
        (default: ``timeout_s`` of the monitor plus a second)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.timeout_s + 1.0 if timeout_s is None else timeout_s)
            if thread.is_alive():
                log.warning("lag_monitor_busy", why="still in a broker call; it finishes on its own (daemon thread)")
        else:
            self._close_consumer()

    def snapshot(self) -> dict[tuple[str, int], int]:
        """The last measured lag per (topic, partition)."""
        with self._lock:
            return dict(self._snapshot)

    def measure(self) -> dict[tuple[str, int], int]:
        """One synchronous measurement (the thread calls this every interval);
        updates the gauge and the snapshot. Raises on broker errors."""
        if self._consumer is None:
            self._consumer = self._factory(self.config)
        consumer = self._consumer
        timeout_ms = max(1, int(self.timeout_s * 1000))
        tps: list[TopicPartition] = []
        for topic in self.topics:
            self._check_stop()
            tps.extend(TopicPartition(topic, p) for p in sorted(_partitions(consumer, topic, timeout_ms)))
        lags: dict[tuple[str, int], int] = {}
        if tps:
            ends = consumer.end_offsets(tps, timeout_ms=timeout_ms)
            committed = {}
            for tp in tps:
                self._check_stop()
                committed[tp] = consumer.committed(tp, timeout_ms=timeout_ms)
            never = [tp for tp in tps if committed[tp] is None]
            begins = consumer.beginning_offsets(never, timeout_ms=timeout_ms) if never else {}
            for tp in tps:
                lags[(tp.topic, tp.partition)] = lag_of(ends[tp], committed[tp], begins.get(tp, 0))
        self._publish(lags)
        return lags

    def _check_stop(self) -> None:
        # only the background thread aborts; a direct measure() call runs to the end
        if self._stop.is_set() and threading.current_thread() is self._thread_obj:
            raise _Stopped()

    def _publish(self, lags: dict[tuple[str, int], int]) -> None:
        gauge = self.metrics.consumer_lag
        with self._lock:
            for gone in set(self._snapshot) - set(lags):
                try:
                    gauge.remove(gone[0], str(gone[1]))
                except KeyError:
                    pass
            for (topic, partition), lag in lags.items():
                gauge.labels(topic=topic, partition=str(partition)).set(lag)
            self._snapshot = lags
            self.measurements += 1

    def _run(self) -> None:
        log.info("lag_monitor_started", topics=list(self.topics), interval_s=self.interval_s)
        try:
            while not self._stop.is_set():
                try:
                    self.measure()
                    self.failures = 0
                except _Stopped:
                    break
                except Exception as exc:  # broker down, timeouts, auth...: log, back off, retry
                    self.failures += 1
                    self.metrics.lag_errors.inc()
                    log.warning("lag_measurement_failed", error=f"{type(exc).__name__}: {exc}",
                                failures=self.failures)
                    if self.failures % REBUILD_AFTER == 0:
                        self._close_consumer()
                self._stop.wait(backoff_s(self.interval_s, self.failures, self.max_backoff_s))
        finally:
            self._close_consumer()
            log.info("lag_monitor_stopped")

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            consumer.close(autocommit=False, timeout_ms=int(self.timeout_s * 1000))
        except TypeError:  # consumers without these keywords
            consumer.close()
        except Exception as exc:
            log.debug("lag_consumer_close_failed", error=str(exc))
