"""LagMonitor: end offsets minus the group's committed offsets, per partition,
measured in a background thread that survives broker errors."""

from __future__ import annotations

import socket
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from stopwise.daemon.config import Config
from stopwise.daemon.kafka_broker import free_port
from stopwise.daemon.metrics import Metrics
from stopwise.daemon.shell.kafka_io import client_kwargs
from stopwise.daemon.shell.lag import LagMonitor, backoff_s, lag_of
from stopwise.daemon.shell.topics import admin_client

from daemon_helpers import producer_for, wait_until


def test_lag_of_counts_from_committed_or_beginning() -> None:
    assert lag_of(end=10, committed=7, beginning=0) == 3
    assert lag_of(end=10, committed=None, beginning=4) == 6
    assert lag_of(end=10, committed=10, beginning=0) == 0
    assert lag_of(end=5, committed=9, beginning=0) == 0  # truncated topic: never negative


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(1.0, n, 10.0) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def _produce(cfg: Config, topic: str, partition: int, n: int) -> None:
    producer = producer_for(cfg)
    try:
        for i in range(n):
            producer.send(topic, key=f"r{i}".encode(), value=b"{}", partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _commit(cfg: Config, offsets: dict[TopicPartition, int]) -> None:
    consumer = KafkaConsumer(**client_kwargs(cfg), group_id=cfg.kafka.group_id, enable_auto_commit=False)
    try:
        consumer.assign(list(offsets))
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
    finally:
        consumer.close(autocommit=False)


def test_lag_is_end_minus_committed_on_the_real_broker(make_config) -> None:
    cfg = make_config()  # 2 input and 2 examples partitions
    inf, fb, ex = cfg.topics.inference, cfg.topics.feedback, cfg.topics.examples
    n, k = 12, 5
    _produce(cfg, inf, 0, n)
    _produce(cfg, fb, 1, 4)
    _commit(cfg, {TopicPartition(inf, 0): k})

    metrics = Metrics()
    monitor = LagMonitor(cfg, metrics, interval_s=0.2)
    monitor.start()
    try:
        expected = {(inf, 0): n - k, (inf, 1): 0, (fb, 0): 0, (fb, 1): 4, (ex, 0): 0, (ex, 1): 0}
        wait_until(lambda: monitor.snapshot() == expected, 30,
                   what=lambda: f"lags {expected}, measured {monitor.snapshot()}")
        sample = metrics.registry.get_sample_value
        assert sample("stopwise_consumer_lag", {"topic": inf, "partition": "0"}) == n - k
        assert sample("stopwise_consumer_lag", {"topic": fb, "partition": "1"}) == 4  # never committed
        assert b'stopwise_consumer_lag{partition="0",topic="%s"} 7.0' % inf.encode() in metrics.render()

        # the group catches up: the gauge follows
        _commit(cfg, {TopicPartition(inf, 0): n, TopicPartition(fb, 1): 3})
        wait_until(lambda: monitor.snapshot().get((inf, 0)) == 0 and monitor.snapshot().get((fb, 1)) == 1, 30,
                   what="the lags to follow the commits")
        assert sample("stopwise_consumer_lag", {"topic": inf, "partition": "0"}) == 0
        assert sample("stopwise_lag_errors_total") == 0
        assert monitor.measurements >= 2
        # the monitor reads the group's offsets without ever joining it
        admin = admin_client(cfg)
        try:
            group = admin.describe_groups([cfg.kafka.group_id])[cfg.kafka.group_id]
        finally:
            admin.close()
        assert group["members"] == [], group
    finally:
        t0 = time.monotonic()
        monitor.stop()
        stopped_in = time.monotonic() - t0
    assert stopped_in < 3.0
    assert monitor._thread is None


def test_monitor_survives_an_unreachable_broker_and_stops_quickly() -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    cfg = Config().model_copy(update={"kafka": Config().kafka.model_copy(update={"bootstrap": dead})})
    metrics = Metrics()
    monitor = LagMonitor(cfg, metrics, interval_s=0.05, timeout_s=0.5, max_backoff_s=0.2)
    monitor.start()
    try:
        wait_until(lambda: (metrics.registry.get_sample_value("stopwise_lag_errors_total") or 0) >= 3, 30,
                   what="3 lag errors")
        assert monitor.snapshot() == {}
        assert monitor.failures >= 3
    finally:
        t0 = time.monotonic()
        monitor.stop()
        stopped_in = time.monotonic() - t0
    assert stopped_in < 3.0


def test_monitor_recovers_after_failures(make_config) -> None:
    cfg = make_config()
    _produce(cfg, cfg.topics.examples, 1, 3)
    attempts = []

    def flaky_factory(c: Config) -> KafkaConsumer:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:  # the broker "is not there yet": the first two connections fail
            raise ConnectionError("broker not reachable (test)")
        return KafkaConsumer(**client_kwargs(c), group_id=c.kafka.group_id, enable_auto_commit=False)

    metrics = Metrics()
    monitor = LagMonitor(cfg, metrics, interval_s=0.05, consumer_factory=flaky_factory, max_backoff_s=0.2)
    monitor.start()
    try:
        wait_until(lambda: monitor.snapshot().get((cfg.topics.examples, 1)) == 3, 30, what="lag after recovery")
        assert metrics.registry.get_sample_value("stopwise_lag_errors_total") == 2
        assert monitor.failures == 0
    finally:
        monitor.stop()


def test_monitor_bounded_against_a_broker_that_never_answers() -> None:
    # a TCP listener that accepts and never replies: every Kafka call must time out, not hang
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        bootstrap = f"127.0.0.1:{hole.getsockname()[1]}"
        cfg = Config().model_copy(update={"kafka": Config().kafka.model_copy(update={"bootstrap": bootstrap})})
        metrics = Metrics()
        monitor = LagMonitor(cfg, metrics, interval_s=0.05, timeout_s=1.0, max_backoff_s=0.2)
        monitor.start()
        try:
            wait_until(lambda: (metrics.registry.get_sample_value("stopwise_lag_errors_total") or 0) >= 2, 30,
                       what="2 lag errors")
        finally:
            t0 = time.monotonic()
            monitor.stop()
            stopped_in = time.monotonic() - t0
        assert stopped_in < 2.5
        assert monitor.snapshot() == {}
