"""EventPublisher: validation, keying, batching, dropping oldest, never blocking, flush/close."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from stopwise.clients.publisher import EventPublisher, FakeProducer
from stopwise.daemon.records import FeedbackEvent, decode_feedback, decode_inference

from clients_helpers import wait_for


def inf_fields(i: int = 0) -> dict:
    return dict(request_id=f"r{i}", ts=1.0, context={"task": "digits"}, threshold=1.0, stop_index=1,
                tokens_used=20, tokens_budget=20, checkpoints=[[10, 0.5, "a"], [20, 0.9, "b"]])


def test_records_are_validated_keyed_and_routed():
    fake = FakeProducer()
    pub = EventPublisher("x", "inf", "fb", producer_factory=lambda **kw: fake)
    pub.inference(**inf_fields(1))
    pub.feedback(request_id="r1", ts=2.0, em=0)
    pub.publish(FeedbackEvent(request_id="r2", ts=3.0, gold_answer_hash="7"))
    assert pub.close(5.0) == 0
    assert pub.sent == 3 and pub.dropped == 0
    topics = [(t, k) for t, k, _ in fake.records]
    assert topics == [("inf", b"r1"), ("fb", b"r1"), ("fb", b"r2")]
    assert decode_inference(fake.records[0][2]).checkpoints[1] == (20, 0.9, "b")
    assert decode_feedback(fake.records[2][2]).gold_answer_hash == "7"


@pytest.mark.parametrize("bad", [
    dict(request_id="", ts=1.0, em=1),          # empty id
    dict(request_id="r", ts=1.0),               # neither em nor gold
    dict(request_id="r", ts=1.0, em=2),         # em not 0/1
])
def test_invalid_record_raises_value_error_and_is_not_queued(bad):
    fake = FakeProducer()
    pub = EventPublisher("x", "inf", "fb", producer_factory=lambda **kw: fake)
    with pytest.raises(ValueError):
        pub.feedback(**bad)
    assert pub.queued == 0
    pub.close(5.0)
    assert fake.records == []


def test_lazy_validation_counts_invalid_in_the_sender():
    fake = FakeProducer()
    pub = EventPublisher("x", "inf", "fb", producer_factory=lambda **kw: fake, validate=False)
    pub.feedback(request_id="r", ts=1.0)          # invalid: accepted by the caller path
    pub.feedback(request_id="r2", ts=1.0, em=1)
    assert pub.close(5.0) == 0
    assert pub.invalid == 1 and pub.sent == 1 and len(fake.records) == 1


def test_broker_down_drops_oldest_never_blocks_and_counts():
    attempts = []

    def no_broker(**kw):
        attempts.append(time.monotonic())
        time.sleep(0.05)
        raise ConnectionError("NoBrokersAvailable")

    reg = CollectorRegistry()
    pub = EventPublisher("x", "inf", "fb", queue_size=100, producer_factory=no_broker, registry=reg,
                         retry_backoff_s=(0.01, 0.05))
    worst = 0.0
    for i in range(1000):
        t = time.perf_counter()
        pub.feedback(request_id=f"r{i}", ts=1.0, em=1)
        worst = max(worst, time.perf_counter() - t)
    assert worst < 0.05, f"a call blocked for {worst * 1e3:.1f} ms"
    assert pub.queued == 100 and pub.dropped == 900
    assert reg.get_sample_value("stopwise_publisher_dropped_total") == 900
    assert [rec.request_id for _, rec in list(pub._q)[:2]] == ["r900", "r901"]  # newest kept
    t = time.monotonic()
    assert pub.flush(timeout=0.3) == 100
    assert time.monotonic() - t < 1.0
    assert pub.close(timeout=0.3) == 100
    assert wait_for(lambda: len(attempts) >= 2, 10)  # it kept retrying in the background


def test_broker_appears_later_and_queue_is_delivered():
    fake = FakeProducer()
    up = threading.Event()

    def factory(**kw):
        if not up.is_set():
            raise ConnectionError("down")
        return fake

    pub = EventPublisher("x", "inf", "fb", producer_factory=factory, retry_backoff_s=(0.01, 0.02))
    for i in range(50):
        pub.feedback(request_id=f"r{i}", ts=1.0, em=1)
    time.sleep(0.1)
    assert pub.sent == 0
    up.set()
    assert pub.flush(5.0) == 0
    assert pub.sent == 50 and len(fake.records) == 50 and pub.dropped == 0
    pub.close(1.0)


def test_slow_producer_does_not_slow_the_caller():
    class Slow(FakeProducer):
        def send(self, topic, value, key):
            time.sleep(0.01)
            return super().send(topic, value, key)

    pub = EventPublisher("x", "inf", "fb", producer_factory=lambda **kw: Slow(), queue_size=1000)
    t = time.perf_counter()
    for i in range(500):
        pub.feedback(request_id=f"r{i}", ts=1.0, em=1)
    per_call = (time.perf_counter() - t) / 500
    assert per_call < 0.001
    pub.close(0.2)


def test_send_errors_are_counted_not_raised():
    class Failing(FakeProducer):
        def send(self, topic, value, key):
            raise TimeoutError("metadata unavailable")

    reg = CollectorRegistry()
    pub = EventPublisher("x", "inf", "fb", producer_factory=lambda **kw: Failing(), registry=reg)
    for i in range(5):
        pub.feedback(request_id=f"r{i}", ts=1.0, em=1)
    assert pub.flush(5.0) == 0
    assert pub.failed == 5 and pub.sent == 0
    assert reg.get_sample_value("stopwise_publisher_failed_total") == 5
    pub.close(1.0)


def test_real_broker_roundtrip(make_config):
    from kafka import KafkaConsumer, TopicPartition

    cfg = make_config()
    pub = EventPublisher(cfg.kafka.bootstrap, cfg.topics.inference, cfg.topics.feedback)
    ids = [f"{uuid.uuid4().hex}-{i}" for i in range(200)]
    for rid in ids:
        pub.inference(**{**inf_fields(), "request_id": rid})
        pub.feedback(request_id=rid, ts=2.0, em=1)
    assert pub.close(30.0) == 0
    assert pub.sent == 400
    got = {}
    for topic in (cfg.topics.inference, cfg.topics.feedback):
        c = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap, group_id=None, auto_offset_reset="earliest",
                          enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        recs = []
        end = time.monotonic() + 30
        while len(recs) < 200 and time.monotonic() < end:
            for batch in c.poll(timeout_ms=500).values():
                recs.extend(batch)
        c.close()
        got[topic] = recs
        assert sorted(r.key.decode() for r in recs) == sorted(ids)
    # same request_id lands on the same partition in both (co-partitioned keying)
    part_inf = {r.key: r.partition for r in got[cfg.topics.inference]}
    assert all(part_inf[r.key] == r.partition for r in got[cfg.topics.feedback])


def test_kafka_future_callbacks_success_and_failure():
    """With kafka-python's own Future (its callback calling convention), acks and errors are counted."""
    from kafka.future import Future

    class Async(FakeProducer):
        def send(self, topic, value, key):
            fut = Future()
            ok = not key.endswith(b"bad")
            threading.Timer(0.01, lambda: fut.success("meta") if ok else fut.failure(RuntimeError("boom"))).start()
            return fut

    reg = CollectorRegistry()
    pub = EventPublisher("x", "inf", "fb", producer_factory=lambda **kw: Async(), registry=reg)
    for rid in ("a", "b", "c-bad"):
        pub.feedback(request_id=rid, ts=1.0, em=1)
    assert pub.flush(5.0) == 0
    assert (pub.sent, pub.failed) == (2, 1)
    assert reg.get_sample_value("stopwise_publisher_sent_total", {"kind": "feedback"}) == 2
    pub.close(1.0)


def test_drop_log_line_is_rate_limited():
    from structlog.testing import capture_logs

    now = [0.0]

    def down(**kw):
        raise ConnectionError("down")

    with capture_logs() as logs:
        pub = EventPublisher("x", "inf", "fb", queue_size=10, producer_factory=down, clock=lambda: now[0],
                             log_interval_s=10.0, retry_backoff_s=(0.005, 0.01))
        for i in range(500):
            pub.feedback(request_id=f"r{i}", ts=1.0, em=1)
        assert wait_for(lambda: len(logs) >= 1, 5)
        time.sleep(0.2)                      # many retries, same clock: no more lines
        first = len(logs)
        now[0] = 11.0                        # the interval passed: one more line
        assert wait_for(lambda: len(logs) == first + 1, 5)
        time.sleep(0.2)
        pub.close(0.1)
    assert first == 1 and len(logs) == 2
    assert all(e["log_level"] == "warning" for e in logs) and logs[-1]["dropped_total"] == pub.dropped >= 490
