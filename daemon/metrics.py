"""Prometheus metrics of the daemon, on an injected registry.

Every metric name starts with ``stopwise_``. A :class:`Metrics` owns its own
:class:`~prometheus_client.CollectorRegistry` (a fresh one unless one is
passed), never the process-global default, so tests and several daemons in one
process never collide. :meth:`Metrics.serve` exposes it over HTTP on a
localhost port (port 0 picks a free one and returns it).

>>> m = Metrics()
>>> m.consumed.labels(topic="stopwise.inference").inc(3)
>>> m.registry.get_sample_value("stopwise_consumed_total", {"topic": "stopwise.inference"})
3.0
>>> m.registry.get_sample_value("stopwise_build_info", {
...     "version": __version__, "python": platform.python_version(),
...     "kafka_python": kafka_python_version()})
1.0
>>> b"stopwise_join_pending 0.0" in m.render()
True
"""

from __future__ import annotations

import platform
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import start_http_server

from . import __version__

PREFIX = "stopwise"

# per poll batch: sub-millisecond to tens of seconds
_BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SNAPSHOT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def kafka_python_version() -> str:
    """Installed kafka-python version ("unknown" if it cannot be imported)."""
    try:
        import kafka

        return str(kafka.__version__)
    except Exception:  # pragma: no cover - kafka-python is a hard dependency
        return "unknown"


class Metrics:
    """The daemon's metric set (see the module docstring).

    Attribute names are the contract with the Kafka shell; the exposed names
    are ``stopwise_<attribute>`` (counters get Prometheus' ``_total`` suffix).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry: CollectorRegistry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        def name(n: str) -> str:
            return f"{PREFIX}_{n}"

        self.consumed = Counter(name("consumed"), "Input records consumed, by topic.", ["topic"], registry=r)
        self.rejected = Counter(
            name("rejected"), "Input records rejected to the DLQ, by topic and DecodeError reason.",
            ["topic", "reason"], registry=r)
        self.input_rerouted = Counter(
            name("input_rerouted"), "Input records on another partition than their key's (murmur2) partition, "
            "re-routed to it, by topic.", ["topic"], registry=r)
        self.join_pending = Gauge(
            name("join_pending"), "Half-joined requests waiting for their other half.", registry=r)
        self.join_pending_bytes = Gauge(
            name("join_pending_bytes"), "Bytes (wire size) of the half-joined requests (capped by join.max_bytes).",
            registry=r)
        self.join_evicted = Counter(
            name("join_evicted"), "Pending joins evicted because the join buffer was full.", registry=r)
        self.join_expired = Counter(
            name("join_expired"), "Pending joins expired at TTL, by missing half (no_feedback|no_inference).",
            ["kind"], registry=r)
        self.examples_joined = Counter(name("examples_joined"), "Labelled examples produced by the join.", registry=r)
        self.examples_learned = Counter(
            name("examples_learned"), "Labelled examples learned by the owner of their context.", registry=r)
        self.examples_duplicate = Counter(
            name("examples_duplicate"), "Labelled examples ignored as already learned.", registry=r)
        self.unique_examples = Gauge(
            name("unique_examples"), "Unique labelled examples learned, summed over owned shards.", registry=r)
        self.thresholds_published = Counter(
            name("thresholds_published"), "Threshold records published, by reason code (core.reasons.REASON_CODES).", ["reason"], registry=r)
        self.consumer_lag = Gauge(
            name("consumer_lag"), "Records not yet committed by the group: end offset minus committed offset.",
            ["topic", "partition"], registry=r)
        self.lag_errors = Counter(
            name("lag_errors"), "Failed consumer-lag measurements (broker errors; retried with backoff).", registry=r)
        self.processing_seconds = Histogram(
            name("processing_seconds"), "Wall time to process one poll batch.", buckets=_BATCH_BUCKETS, registry=r)
        self.snapshot_seconds = Histogram(
            name("snapshot_seconds"), "Wall time to take and write one state snapshot.",
            buckets=_SNAPSHOT_BUCKETS, registry=r)
        self.snapshots = Counter(name("snapshots"), "State snapshots written.", registry=r)
        self.reloads = Counter(
            name("reloads"), "Configuration reloads (SIGHUP), by result (applied|rejected).", ["result"], registry=r)
        self.build_info = Info(name("build"), "Build information.", registry=r)
        self.build_info.info({
            "version": __version__,
            "python": platform.python_version(),
            "kafka_python": kafka_python_version(),
        })
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def render(self) -> bytes:
        """The registry in Prometheus text format (what the endpoint serves)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint in a daemon thread; return the bound port.

        ``port=0`` picks a free port. Calling it again while serving raises
        :class:`RuntimeError`; :meth:`close` stops it.
        """
        if self._server is not None:
            raise RuntimeError(f"metrics endpoint already serving on port {self._server.server_port}")
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_port)

    @property
    def port(self) -> int | None:
        """The port being served, or ``None`` when not serving."""
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
