"""Metrics: injected registry, stopwise_ names, HTTP endpoint on a free port."""

from __future__ import annotations

import platform
import socket
import urllib.error
import urllib.request

import kafka
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from stopwise.daemon import __version__
from stopwise.daemon.metrics import Metrics


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def test_serve_on_free_port_and_scrape_what_was_incremented() -> None:
    m = Metrics()
    m.consumed.labels(topic="stopwise.inference").inc(7)
    m.rejected.labels(topic="stopwise.feedback", reason="bad_json").inc()
    m.join_pending.set(42)
    m.join_expired.labels(kind="no_feedback").inc(2)
    m.thresholds_published.labels(reason="policy").inc(3)
    m.consumer_lag.labels(topic="stopwise.inference", partition="1").set(9)
    m.processing_seconds.observe(0.003)
    port = m.serve("127.0.0.1", 0)
    try:
        assert port > 0 and m.port == port
        text = scrape(port)
    finally:
        m.close()
    assert 'stopwise_consumed_total{topic="stopwise.inference"} 7.0' in text
    assert 'stopwise_rejected_total{reason="bad_json",topic="stopwise.feedback"} 1.0' in text
    assert "stopwise_join_pending 42.0" in text
    assert 'stopwise_join_expired_total{kind="no_feedback"} 2.0' in text
    assert 'stopwise_thresholds_published_total{reason="policy"} 3.0' in text
    assert 'stopwise_consumer_lag{partition="1",topic="stopwise.inference"} 9.0' in text
    assert "stopwise_processing_seconds_count 1.0" in text
    assert 'stopwise_processing_seconds_bucket{le="0.005"} 1.0' in text
    assert (f'stopwise_build_info{{kafka_python="{kafka.__version__}",python="{platform.python_version()}",'
            f'version="{__version__}"}} 1.0') in text
    # every metric family is ours
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(n.startswith("stopwise_") for n in names)


def test_close_stops_the_endpoint() -> None:
    m = Metrics()
    port = m.serve("127.0.0.1", 0)
    m.close()
    m.close()  # idempotent
    assert m.port is None
    with pytest.raises((urllib.error.URLError, ConnectionError, socket.timeout)):
        scrape(port)


def test_serve_twice_is_refused() -> None:
    m = Metrics()
    m.serve("127.0.0.1", 0)
    try:
        with pytest.raises(RuntimeError, match="already serving"):
            m.serve("127.0.0.1", 0)
    finally:
        m.close()


def test_registries_are_isolated_and_never_global() -> None:
    a, b = Metrics(), Metrics()
    a.examples_learned.inc(5)
    assert a.registry is not b.registry and a.registry is not REGISTRY
    assert a.registry.get_sample_value("stopwise_examples_learned_total") == 5
    assert b.registry.get_sample_value("stopwise_examples_learned_total") == 0
    assert REGISTRY.get_sample_value("stopwise_examples_learned_total") is None


def test_injected_registry_is_used() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.snapshots.inc()
    m.snapshot_seconds.observe(0.2)
    m.unique_examples.set(11)
    assert m.registry is reg
    assert reg.get_sample_value("stopwise_snapshots_total") == 1
    assert reg.get_sample_value("stopwise_snapshot_seconds_count") == 1
    assert reg.get_sample_value("stopwise_unique_examples") == 11


def test_port_in_use_is_a_clear_error() -> None:
    m = Metrics()
    port = m.serve("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            Metrics().serve("127.0.0.1", port)
    finally:
        m.close()
