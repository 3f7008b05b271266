"""Misplaced input is re-routed, keyless input dead-lettered (issue 10),
without a broker: the join path's per-record partition check, the copy it
produces, the duplicate a re-delivery makes, the rate-limited warning."""

from __future__ import annotations

import random
from collections import namedtuple

from kafka import TopicPartition
from structlog.testing import capture_logs

from stopwise.daemon.config import Config
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.engine import Controller
from stopwise.daemon.core.join import Joiner
from stopwise.daemon.partitioner import LIBRDKAFKA, UNKNOWN, crc32_partition, key_partition
from stopwise.daemon.shell import reroute
from stopwise.daemon.shell.dlq import DeadLetters
from stopwise.daemon.shell.kafka_io import CheckedProducer
from stopwise.daemon.shell.processing import Processor
from stopwise.daemon.shell.runner import Daemon
from stopwise.daemon.shell.shards import Shard
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

from daemon_helpers import FakeProducer

Rec = namedtuple("Rec", "topic partition offset key value headers")
N = 4


def _processor() -> tuple[Processor, FakeProducer]:
    cfg = Config(topics={"input_partitions": N})
    d = Daemon(cfg, lag_monitor=False)
    fake = FakeProducer()
    d.producer = CheckedProducer(fake)
    d._n_examples = 2
    keyer = ContextKeyer(cfg.context.dimensions)
    d.shards = {**{f"join/{p}": Shard(f"join/{p}", "join", p, Joiner(3600, 100_000, keyer), {}) for p in range(N)},
                **{f"learn/{p}": Shard(f"learn/{p}", "learn", p, Controller(cfg), {}) for p in (0, 1)}}
    return Processor(d, DeadLetters(d.producer, cfg.topics.dlq, d.metrics)), fake


def _pair(rid: str):
    inf, fb = to_events(make_request(random.Random(rid), THREE_CONTEXTS[0], rid, 1.0), 0.9, 0.2)
    return inf.to_bytes(), fb.to_bytes()


def _rid_misplaced_by_crc32() -> str:
    return next(r for r in (f"req-{i}" for i in range(100))
                if key_partition(r.encode(), N) != crc32_partition(r.encode(), N))


def _rerouted(proc: Processor, topic: str) -> float:
    return proc.d.metrics.registry.get_sample_value("stopwise_input_rerouted_total", {"topic": topic}) or 0.0


def test_a_feedback_on_its_crc32_partition_is_rerouted_and_joins_on_the_murmur2_one() -> None:
    proc, fake = _processor()
    t = proc.d.cfg.topics
    rid = _rid_misplaced_by_crc32()
    key, inf, fb = rid.encode(), *_pair(rid)
    good, bad = key_partition(key, N), crc32_partition(key, N)
    proc.process({TopicPartition(t.inference, good): [Rec(t.inference, good, 0, key, inf, [])],
                  TopicPartition(t.feedback, bad): [Rec(t.feedback, bad, 7, key, fb, [("trace", b"x")])]}, now=2.0)
    # the inference joined locally (its unlabelled evidence), the feedback did not: it was sent to its partition
    copies = [(s, h) for s, h in zip(fake.sent, fake.headers) if s[0] == t.feedback]
    assert copies == [((t.feedback, key, fb), [("trace", b"x"), (reroute.REROUTED_HEADER, f"{t.feedback}/{bad}/7".encode())])]
    assert proc.joined == 0 and proc.unlabelled == 1 and proc.reroute.rerouted == 1
    assert len(proc.d.shards[f"join/{bad}"].obj) == 0 and len(proc.d.shards[f"join/{good}"].obj) == 1
    assert proc.d.shards[f"join/{bad}"].positions   # the original's offset is consumed (the copy carries it on)
    assert _rerouted(proc, t.feedback) == 1
    # the copy, read back on the murmur2 partition, joins there; a second copy (re-delivery after a crash
    # between the send and the checkpoint) is a duplicate the Joiner ignores
    (_, _, value), headers = copies[0]
    copy = Rec(t.feedback, good, 0, key, value, headers)
    again = Rec(t.feedback, good, 1, key, value, headers)
    proc.process({TopicPartition(t.feedback, good): [copy, again]}, now=3.0)
    joiner = proc.d.shards[f"join/{good}"].obj
    assert proc.joined == 1 and joiner.stats.joined == 1 and joiner.stats.duplicates == 1 and len(joiner) == 0
    assert proc.reroute.rerouted == 1


def test_a_copy_is_not_bounced_again_and_records_in_place_cost_nothing() -> None:
    proc, fake = _processor()
    t = proc.d.cfg.topics
    rid = _rid_misplaced_by_crc32()
    key, inf, _ = rid.encode(), *_pair(rid)
    bad = crc32_partition(key, N)
    # a copy on a partition this instance's count calls wrong (another count while partitions are added): kept
    stale = Rec(t.inference, bad, 0, key, inf, [(reroute.REROUTED_HEADER, b"x/0/0")])
    proc.process({TopicPartition(t.inference, bad): [stale]}, now=2.0)
    assert proc.reroute.rerouted == 0 and len(proc.d.shards[f"join/{bad}"].obj) == 1
    assert not [s for s in fake.sent if s[0] == t.inference]


def test_a_keyless_input_record_goes_to_the_dlq_as_no_key() -> None:
    proc, fake = _processor()
    t = proc.d.cfg.topics
    inf, fb = _pair("nokey")
    proc.process({TopicPartition(t.inference, 1): [Rec(t.inference, 1, 3, None, inf, [])],
                  TopicPartition(t.feedback, 2): [Rec(t.feedback, 2, 4, None, fb, [])]}, now=2.0)
    dlq = [(s, dict(h)) for s, h in zip(fake.sent, fake.headers) if s[0] == t.dlq]
    assert [(s[2], h["stopwise.reason"], h["stopwise.topic"]) for s, h in dlq] == [
        (inf, b"no_key", t.inference.encode()), (fb, b"no_key", t.feedback.encode())]
    assert proc.unlabelled == 0 and all(len(proc.d.shards[f"join/{p}"].obj) == 0 for p in range(N))
    assert proc.d.metrics.registry.get_sample_value(
        "stopwise_rejected_total", {"topic": t.inference, "reason": "no_key"}) == 1


def test_the_warning_is_rate_limited_with_counts_and_names_the_partitioner(monkeypatch) -> None:
    proc, fake = _processor()
    t = proc.d.cfg.topics
    clock = [1000.0]
    monkeypatch.setattr(reroute.time, "monotonic", lambda: clock[0])
    keys = [f"req-{i}".encode() for i in range(200)]
    crc = [k for k in keys if key_partition(k, N) != crc32_partition(k, N)][:30]
    with capture_logs() as logs:
        for i, k in enumerate(crc):
            proc.reroute.check(Rec(t.feedback, crc32_partition(k, N), i, k, b"{}", []), N)
            clock[0] += 1.0   # 30 s in all: one warning (the first)
        clock[0] += 60.0
        k = crc[0]
        other = next(p for p in range(N) if p not in (key_partition(k, N), crc32_partition(k, N)))
        proc.reroute.check(Rec(t.inference, other, 99, k, b"{}", []), N)
    warns = [e for e in logs if e["event"] == "input_rerouted"]
    assert len(warns) == 2 and all(e["log_level"] == "warning" for e in warns)
    assert warns[0]["rerouted"] == 1 and warns[0]["likely_partitioner"] == LIBRDKAFKA
    # the second: everything since the first (29 more CRC32 feedbacks, 1 unknown inference)
    assert warns[1]["rerouted"] == 30 and warns[1]["likely_partitioner"] == UNKNOWN
    assert {(g["topic"], g["likely_partitioner"]): g["count"] for g in warns[1]["by_topic_and_partitioner"]} == {
        (t.feedback, LIBRDKAFKA): 29, (t.inference, UNKNOWN): 1}
    assert _rerouted(proc, t.feedback) == 30 and _rerouted(proc, t.inference) == 1
    assert "murmur2_random" in LIBRDKAFKA


def test_partition_counts_come_from_the_consumer_and_are_cached() -> None:
    proc, _ = _processor()
    calls = []

    class Consumer:
        def partitions_for_topic(self, topic):
            calls.append(topic)
            return {0, 1, 2, 3, 4, 5}

    proc.d.consumer = Consumer()
    assert [proc.reroute.count("a"), proc.reroute.count("a")] == [6, 6] and calls == ["a"]
    proc.reroute.partitions.clear()   # at each assignment
    assert proc.reroute.count("a") == 6 and calls == ["a", "a"]
