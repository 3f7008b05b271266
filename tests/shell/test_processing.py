"""The shell's per-batch processing without a broker: examples are batched
per context key into few examples-topic records, and a batch record with an
invalid example goes to the DLQ whole while its valid examples are learned."""

from __future__ import annotations

import json
import random
from collections import namedtuple

from kafka import TopicPartition

from stopwise.daemon.config import Config
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.engine import Controller
from stopwise.daemon.core.examples import decode_examples, encode_examples, from_events
from stopwise.daemon.core.join import Joiner
from stopwise.daemon.shell import processing
from stopwise.daemon.shell.dlq import DeadLetters
from stopwise.daemon.shell.kafka_io import CheckedProducer, owner_partition
from stopwise.daemon.shell.processing import Processor
from stopwise.daemon.shell.runner import Daemon
from stopwise.daemon.shell.shards import Shard
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

from daemon_helpers import FakeProducer

Rec = namedtuple("Rec", "topic partition offset key value headers")


def _daemon() -> tuple[Daemon, FakeProducer]:
    cfg = Config(topics={"input_partitions": 1})   # every input record below is on partition 0, join/0's
    d = Daemon(cfg, lag_monitor=False)
    fake = FakeProducer()
    d.producer = CheckedProducer(fake)
    d._n_examples = 2
    keyer = ContextKeyer(cfg.context.dimensions)
    d.shards = {"join/0": Shard("join/0", "join", 0, Joiner(3600, 100_000, keyer), {}),
                **{f"learn/{p}": Shard(f"learn/{p}", "learn", p, Controller(cfg), {}) for p in (0, 1)}}
    return d, fake


def _input_batch(cfg: Config, n: int):
    rng = random.Random(3)
    infs, fbs = [], []
    for i in range(n):
        inf, fb = to_events(make_request(rng, THREE_CONTEXTS[i % 3], f"r{i}", 1.0), 0.9, 0.2)
        infs.append(Rec(cfg.topics.inference, 0, i, inf.request_id.encode(), inf.to_bytes(), []))
        fbs.append(Rec(cfg.topics.feedback, 0, i, fb.request_id.encode(), fb.to_bytes(), []))
    return {TopicPartition(cfg.topics.inference, 0): infs, TopicPartition(cfg.topics.feedback, 0): fbs}


def test_examples_are_batched_one_record_per_context_key(monkeypatch) -> None:
    monkeypatch.setattr(processing, "EXAMPLES_PER_RECORD", 40)
    d, fake = _daemon()
    proc = Processor(d, DeadLetters(d.producer, d.cfg.topics.dlq))
    proc.process(_input_batch(d.cfg, 150), now=2.0)

    sent = [(key, value) for topic, key, value in fake.sent if topic == d.cfg.topics.examples]
    per_key: dict[bytes, list] = {}
    for key, value in sent:
        good, bad = decode_examples(value)
        assert bad == [] and {e.context_key.encode() for e in good} == {key}
        assert len(good) <= 40
        per_key.setdefault(key, []).extend(good)
    # 3 contexts x 50 requests, each an unlabelled example (its inference event came first)
    # and a labelled follow-up, capped at 40 per record: 3 records per context, nothing lost or repeated
    assert len(sent) == 9 and proc.example_records == 9
    assert sorted(len(v) for v in per_key.values()) == [100, 100, 100]
    got = sorted((e.request_id, e.em is not None, e.followup) for v in per_key.values() for e in v)
    assert got == sorted([(f"r{i}", False, False) for i in range(150)] + [(f"r{i}", True, True) for i in range(150)])
    assert proc.joined == 150 and proc.unlabelled == 150
    # this instance owns both learn shards: every example was learned as it was produced
    assert proc.learned == proc.learned_locally == 300
    assert sum(d.shards[f"learn/{p}"].obj.unique_examples for p in (0, 1)) == 300


def _read_back(d: Daemon, fake: FakeProducer, proc: Processor, headers_of=lambda h: h) -> None:
    """Feed the examples records the fake producer got back to the processor."""
    batch: dict = {}
    sent = [(s, h) for s, h in zip(fake.sent, fake.headers) if s[0] == d.cfg.topics.examples]
    for i, ((topic, key, value), headers) in enumerate(sent):
        p = owner_partition(key.decode(), 2)
        hdrs = headers_of(headers) or []
        batch.setdefault(TopicPartition(topic, p), []).append(Rec(topic, p, i, key, value, hdrs))
    proc.process(batch, now=3.0)


def test_records_learned_as_produced_are_skipped_when_read_back_by_the_same_shard() -> None:
    d, fake = _daemon()
    proc = Processor(d, DeadLetters(d.producer, d.cfg.topics.dlq))
    proc.process(_input_batch(d.cfg, 60), now=2.0)
    tags = {d.shards[f"learn/{p}"].tag.encode() for p in (0, 1)}
    assert {dict(h)["stopwise.learned"] for h in fake.headers if h} <= tags and all(fake.headers)
    _read_back(d, fake, proc)
    # 60 requests, each an unlabelled example and its labelled follow-up
    assert (proc.learned, proc.duplicates) == (120, 0)    # skipped: not decoded, not counted again
    assert all(s.positions for n, s in d.shards.items() if n.startswith("learn/") and s.obj.unique_examples)


def test_records_of_another_incarnation_are_decoded_and_deduplicated() -> None:
    d, fake = _daemon()
    proc = Processor(d, DeadLetters(d.producer, d.cfg.topics.dlq))
    proc.process(_input_batch(d.cfg, 60), now=2.0)
    # as after a restart or rebalance: the tag in the headers is not the current shards'
    _read_back(d, fake, proc, headers_of=lambda h: [("stopwise.learned", b"an-old-incarnation")])
    assert (proc.learned, proc.duplicates) == (120, 120)
    assert sum(d.shards[f"learn/{p}"].obj.unique_examples for p in (0, 1)) == 120


def test_without_the_learn_shard_examples_are_sent_untagged_for_their_owner() -> None:
    d, fake = _daemon()
    del d.shards["learn/0"], d.shards["learn/1"]   # another instance owns the examples partitions
    proc = Processor(d, DeadLetters(d.producer, d.cfg.topics.dlq))
    proc.process(_input_batch(d.cfg, 30), now=2.0)
    assert proc.learned == 0 and fake.headers and not any(fake.headers)


def test_examples_go_to_the_partition_owning_their_context() -> None:
    d, fake = _daemon()
    sends = []
    d.producer.send = lambda topic, value=None, key=None, headers=None, partition=None: sends.append((key, partition))
    Processor(d, DeadLetters(d.producer, d.cfg.topics.dlq)).process(_input_batch(d.cfg, 30), now=2.0)
    assert sends and all(p == owner_partition(k.decode(), 2) for k, p in sends)


def test_batch_with_an_invalid_example_is_dead_lettered_and_the_rest_learned() -> None:
    d, fake = _daemon()
    keyer = ContextKeyer(d.cfg.context.dimensions)
    rng = random.Random(4)
    exs = [from_events(*to_events(make_request(rng, THREE_CONTEXTS[0], f"x{i}", 1.0), 0.9, 0.2), keyer)
           for i in range(5)]
    doc = json.loads(encode_examples(exs))
    doc["examples"][2][doc["fields"].index("propensity")] = 0.0   # out of (0, 1]
    value = json.dumps(doc).encode()
    p = owner_partition(exs[0].context_key, 2)
    rec = Rec(d.cfg.topics.examples, p, 17, exs[0].context_key.encode(), value, [])
    proc = Processor(d, DeadLetters(d.producer, d.cfg.topics.dlq))
    proc.process({TopicPartition(d.cfg.topics.examples, p): [rec]}, now=2.0)

    assert proc.learned == 4 and d.shards[f"learn/{p}"].obj.unique_examples == 4
    dlq = [(key, v) for topic, key, v in fake.sent if topic == d.cfg.topics.dlq]
    assert dlq == [(rec.key, value)]           # the original bytes, once
    assert d.shards[f"learn/{p}"].positions == {f"{d.cfg.topics.examples}:{p}": 18}
