"""Issue 13, reproduction 4: an UnknownMemberIdError on commit, then a
KafkaConnectionError out of ``consumer.poll()``, used to end the run loop
(exit 1). The loop must back off, re-join and go on, and neither lose nor
double-count an example. Broker-less: an in-memory Kafka (one partition per
topic) stands in for the producer, the group consumer and the readers."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import kafka.errors as kerr
import pytest
from kafka import TopicPartition
from kafka.future import Future

from stopwise.daemon.config import parse_config
from stopwise.daemon.errors import FatalKafkaError, KafkaUnavailable
from stopwise.daemon.shell.kafka_io import Backoff, is_retriable
from stopwise.daemon.shell.snapshots import Snapshot

from daemon_helpers import DaemonThread, batch, labelled_total, wait_until


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    timestamp: int = 0


class MemKafka:
    """Append-only logs, one partition per topic."""

    def __init__(self) -> None:
        self.logs: dict[str, list[Rec]] = {}
        self.lock = threading.Lock()

    def append(self, topic, key, value, headers=None) -> None:
        with self.lock:
            log = self.logs.setdefault(topic, [])
            log.append(Rec(topic, 0, len(log), key, value, list(headers or [])))

    def read(self, tp: TopicPartition, pos: int, n: int) -> list[Rec]:
        with self.lock:
            return list(self.logs.get(tp.topic, [])[pos:pos + n])

    def end(self, topic: str) -> int:
        with self.lock:
            return len(self.logs.get(topic, []))


class MemProducer:
    def __init__(self, kafka: MemKafka) -> None:
        self.kafka = kafka

    def send(self, topic, value=None, key=None, headers=None, partition=None):
        self.kafka.append(topic, key, value, headers)
        fut = Future()
        fut.success(None)
        return fut

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


class MemReader:
    """Enough of a group-less KafkaConsumer for CompactedView."""

    def __init__(self, kafka: MemKafka) -> None:
        self.kafka, self.pos = kafka, {}

    def partitions_for_topic(self, topic):
        return {0}

    def assign(self, tps):
        self.pos = {tp: 0 for tp in tps}

    def seek_to_beginning(self, *tps):
        for tp in tps:
            self.pos[tp] = 0

    def end_offsets(self, tps, timeout_ms=None):
        return {tp: self.kafka.end(tp.topic) for tp in tps}

    def position(self, tp):
        return self.pos[tp]

    def poll(self, timeout_ms=0, max_records=500):
        out = {}
        for tp, p in self.pos.items():
            recs = self.kafka.read(tp, p, max_records)
            if recs:
                out[tp] = recs
                self.pos[tp] = p + len(recs)
        return out

    def close(self, autocommit=False):
        pass


class MemGroupConsumer(MemReader):
    """A group consumer that owns every partition; ``fail_commits`` and
    ``fail_polls`` are exceptions raised by the next commits / polls. A
    failed commit with UnknownMemberId resets the membership, as
    kafka-python does: the next good poll reports the partitions lost, then
    assigns them again."""

    def __init__(self, kafka: MemKafka, topics: list[str]) -> None:
        super().__init__(kafka)
        self.topics_ = topics
        self.listener = None
        self.paused: set = set()
        self.joined = False
        self.fail_commits: list[BaseException] = []
        self.fail_polls: list[BaseException] = []
        self.commits, self.joins = [], 0

    def subscribe(self, topics, listener):
        self.listener = listener

    def topics(self):
        return set(self.topics_)

    def assignment(self):
        return set(self.pos)

    def pause(self, *tps):
        self.paused |= set(tps)

    def resume(self, *tps):
        self.paused -= set(tps)

    def seek(self, tp, off):
        self.pos[tp] = off

    def commit(self, offsets, timeout_ms=None):
        if self.fail_commits:
            exc = self.fail_commits.pop(0)
            if isinstance(exc, kerr.CommitFailedError):
                self.joined = False  # reset_generation(): the membership is lost
            raise exc
        self.commits.append(dict(offsets))

    def poll(self, timeout_ms=0, max_records=500):
        if self.fail_polls:
            raise self.fail_polls.pop(0)
        if not self.joined:
            if self.pos:
                asyncio.run(self.listener.on_partitions_lost(set(self.pos)))
                self.pos = {}
            tps = {TopicPartition(t, 0) for t in self.topics_}
            self.pos = {tp: 0 for tp in tps}  # fetch positions are re-set by the daemon's restore
            self.joined = True
            self.joins += 1
            asyncio.run(self.listener.on_partitions_assigned(tps))
            return {}
        out = {}
        for tp, p in self.pos.items():
            if tp in self.paused:
                continue
            recs = self.kafka.read(tp, p, max_records)
            if recs:
                out[tp] = recs
                self.pos[tp] = p + len(recs)
        if not out:
            time.sleep(timeout_ms / 1000)
        return out


def _cfg():
    topics = {n: f"mem.{n}" for n in ("inference", "feedback", "examples", "thresholds", "decisions", "state", "dlq")}
    return parse_config({
        "kafka": {"poll_timeout_ms": 10},
        "topics": {**topics, "input_partitions": 1, "examples_partitions": 1},
        "publish": {"interval_s": 0.1}, "snapshot": {"interval_s": 0.1},
        "join": {"ttl_s": 3600.0}, "metrics": {"enabled": False}, "security": {"allow_unsigned": True},
    }, file="<test>")


def _send(kafka: MemKafka, cfg, prefix: str, n: int, seed: int) -> None:
    for inf, fb in batch(prefix, n, seed):
        kafka.append(cfg.topics.inference, inf.request_id.encode(), inf.to_bytes())
        kafka.append(cfg.topics.feedback, fb.request_id.encode(), fb.to_bytes())


def _labelled(kafka: MemKafka, cfg) -> int:
    latest = {r.key: r.value for r in kafka.logs.get(cfg.topics.state, []) if r.key}
    snaps = {k.decode(): Snapshot.decode(v, None) for k, v in latest.items() if k.startswith(b"learn/")}
    return labelled_total(snaps)


def test_unknown_member_on_commit_then_connection_error_from_poll_keeps_the_loop_running() -> None:
    cfg = _cfg()
    kafka = MemKafka()
    consumers: list[MemGroupConsumer] = []

    def consumer_factory(c):
        consumers.append(MemGroupConsumer(kafka, [c.topics.inference, c.topics.feedback, c.topics.examples]))
        return consumers[-1]

    d = DaemonThread(cfg, producer_factory=lambda c: MemProducer(kafka), consumer_factory=consumer_factory,
                     reader_factory=lambda c: MemReader(kafka)).start(ready_timeout_s=10)
    daemon, consumer = d.daemon, consumers[0]
    try:
        _send(kafka, cfg, "a", 60, seed=1)
        wait_until(lambda: _labelled(kafka, cfg) == 60, 20, what=lambda: f"60 labelled, got {_labelled(kafka, cfg)}")
        joins = consumer.joins
        # reproduction 4: the commit fails (membership gone), then the broker drops out under poll()
        consumer.fail_commits = [kerr.CommitFailedError(kerr.UnknownMemberIdError("g"))]
        consumer.fail_polls = [kerr.KafkaConnectionError("connection reset"),
                               kerr.KafkaConnectionError("connection refused")]
        _send(kafka, cfg, "b", 60, seed=2)
        wait_until(lambda: not consumer.fail_commits and not consumer.fail_polls, 20, what="the injected errors")
        wait_until(lambda: _labelled(kafka, cfg) >= 120, 20, what=lambda: f"120 labelled, got {_labelled(kafka, cfg)}")
        _send(kafka, cfg, "c", 30, seed=3)  # and it keeps processing new records afterwards
        wait_until(lambda: _labelled(kafka, cfg) >= 150, 20, what=lambda: f"150 labelled, got {_labelled(kafka, cfg)}")
        time.sleep(0.5)  # a few more checkpoints: a double count would show here
        assert d.thread.is_alive() and d.error is None
        assert daemon.kafka_retries == 2                 # one per failed poll
        assert consumer.joins == joins + 1               # re-joined once, after the lost membership
        assert len(consumers) == 1                       # the same consumer, no rebuild needed
        assert consumer.commits, "commits resumed after the re-join"
    finally:
        rc = d.stop(10)
    assert rc == 0
    assert _labelled(kafka, cfg) == 150                  # every request learned exactly once


def test_stop_is_honoured_while_backing_off() -> None:
    cfg = _cfg()
    kafka = MemKafka()
    consumers: list[MemGroupConsumer] = []

    def consumer_factory(c):
        consumers.append(MemGroupConsumer(kafka, [c.topics.inference, c.topics.feedback, c.topics.examples]))
        return consumers[-1]

    d = DaemonThread(cfg, producer_factory=lambda c: MemProducer(kafka), consumer_factory=consumer_factory,
                     reader_factory=lambda c: MemReader(kafka)).start(ready_timeout_s=10)
    pings = []
    d.daemon.notifier.watchdog = lambda: pings.append(time.monotonic())
    consumers[0].fail_polls = [kerr.NodeNotReadyError("down")] * 10_000  # a long outage
    wait_until(lambda: d.daemon.kafka_retries >= 8, 30, what="backoff to reach its cap")
    n = len(pings)
    time.sleep(2.5)
    assert len(pings) >= n + 2, "the watchdog is pinged while backing off"
    t0 = time.monotonic()
    assert d.stop(10) == 0
    assert time.monotonic() - t0 < 1.0, "stop waited for the backoff"


def test_no_broker_at_startup_or_during_a_consumer_rebuild_is_retried() -> None:
    cfg = _cfg()
    kafka = MemKafka()
    consumers: list[MemGroupConsumer] = []
    down = [kerr.KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9092")] * 2

    def consumer_factory(c):
        if down:
            raise down.pop()
        consumers.append(MemGroupConsumer(kafka, [c.topics.inference, c.topics.feedback, c.topics.examples]))
        return consumers[-1]

    d = DaemonThread(cfg, producer_factory=lambda c: MemProducer(kafka), consumer_factory=consumer_factory,
                     reader_factory=lambda c: MemReader(kafka)).start(ready_timeout_s=20)
    try:
        assert d.daemon.kafka_retries == 2 and len(consumers) == 1
        _send(kafka, cfg, "a", 20, seed=1)
        wait_until(lambda: _labelled(kafka, cfg) == 20, 20, what="20 labelled")
        # the stalled-rebalance safety net rebuilds the consumer while the broker is away
        down[:] = [kerr.KafkaTimeoutError("Unable to bootstrap")] * 3
        d.daemon._revoked_at = time.monotonic() - 3600
        wait_until(lambda: len(consumers) == 2, 30, what="the consumer rebuilt once Kafka is back")
        _send(kafka, cfg, "b", 20, seed=2)
        wait_until(lambda: _labelled(kafka, cfg) == 40, 20, what=lambda: f"40 labelled, got {_labelled(kafka, cfg)}")
        assert d.daemon.kafka_retries == 5 and d.thread.is_alive()
    finally:
        assert d.stop(10) == 0
    assert _labelled(kafka, cfg) == 40


def test_a_fatal_error_exits_1_with_one_line() -> None:
    from structlog.testing import capture_logs

    cfg = _cfg()
    kafka = MemKafka()
    consumers: list[MemGroupConsumer] = []

    def consumer_factory(c):
        consumers.append(MemGroupConsumer(kafka, [c.topics.inference, c.topics.feedback, c.topics.examples]))
        return consumers[-1]

    with capture_logs() as logs:
        d = DaemonThread(cfg, producer_factory=lambda c: MemProducer(kafka), consumer_factory=consumer_factory,
                         reader_factory=lambda c: MemReader(kafka)).start(ready_timeout_s=10)
        consumers[0].fail_polls = [kerr.GroupAuthorizationFailedError("g")]
        d.thread.join(10)
    assert not d.thread.is_alive() and d.rc == 1 and d.error is None
    fatal = [e for e in logs if e["event"] == "daemon_fatal"]
    assert len(fatal) == 1 and fatal[0]["where"] == "poll" and not fatal[0]["exc_info"]
    assert "GroupAuthorizationFailedError" in fatal[0]["error"]
    assert not [e for e in logs if e["event"] == "kafka_retry"]          # not retried
    assert [e["event"] for e in logs][-2:] == ["daemon_stopped", "daemon_fatal"]  # closed, then the last word


@pytest.mark.parametrize("exc,retriable", [
    (kerr.KafkaConnectionError(), True), (kerr.NodeNotReadyError(), True), (kerr.KafkaTimeoutError(), True),
    (kerr.CoordinatorNotAvailableError(), True), (kerr.NotCoordinatorError(), True),
    (kerr.RebalanceInProgressError(), True), (kerr.UnknownMemberIdError(), True),
    (kerr.IllegalGenerationError(), True), (kerr.CommitFailedError(), True), (kerr.RequestTimedOutError(), True),
    (kerr.BrokerNotAvailableError(), True), (kerr.CoordinatorLoadInProgressError(), True),
    (KafkaUnavailable("poll", ConnectionError(), 1, 0.1), True),
    (kerr.TopicAuthorizationFailedError(), False), (kerr.GroupAuthorizationFailedError(), False),
    (kerr.SaslAuthenticationFailedError(), False), (kerr.KafkaConfigurationError(), False),
    (kerr.UnsupportedVersionError(), False), (kerr.IllegalStateError("KafkaConsumer is closed"), False),
    (RuntimeError("refusing to snapshot past lost output"), False), (ValueError(), False),
])
def test_is_retriable_classifies_in_one_place(exc, retriable) -> None:
    assert is_retriable(exc) is retriable


def test_a_failed_rebalance_listener_is_classified_by_its_cause() -> None:
    for cause, want in ((kerr.KafkaTimeoutError("flush"), True), (RuntimeError("lost output"), False)):
        try:
            try:
                raise cause
            except Exception as exc:  # what kafka-python's poll() re-raises
                raise kerr.KafkaError("User rebalance callback throws an error") from exc
        except kerr.KafkaError as wrapped:
            assert is_retriable(wrapped) is want


def test_backoff_is_capped_exponential_with_jitter() -> None:
    import random

    b = Backoff(base_s=0.1, cap_s=2.0, rng=random.Random(7))
    waits = [b.next() for _ in range(40)]
    assert all(0.1 <= w <= 2.0 for w in waits)
    assert max(waits[:3]) <= 0.4 and max(waits[10:]) > 1.0   # grows, then stays under the cap
    assert len({round(w, 6) for w in waits[10:]}) > 20        # jittered, not a fixed sleep
    assert FatalKafkaError("poll", kerr.TopicAuthorizationFailedError()).where == "poll"
