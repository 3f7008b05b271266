"""ShardedControllers: the daemon's learn composition without Kafka --
routing by owner partition (Kafka's murmur2 partitioner), every shard
learning its examples for the key and its ancestors, each context published
only by its owner; and Core built on it."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner, murmur2 as kafka_murmur2

from stopwise.daemon.config import parse_config
from stopwise.daemon.context import ContextKeyer, murmur2, owner_partition, parents
from stopwise.daemon.core.engine import Controller, Core
from stopwise.daemon.core.examples import from_events
from stopwise.daemon.core.sharded import ShardedControllers, owned
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

CONTEXTS = [{"task": t, "domain": d} for t in ("qa", "extract", "math") for d in ("finance", "science", "legal")]


@given(st.binary(max_size=64))
def test_murmur2_is_kafkas(data):
    assert murmur2(data) == kafka_murmur2(data)


class _Cluster:
    """The metadata DefaultPartitioner.partition reads: one topic of ``n`` partitions."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return set(range(self.n))

    available_partitions_for_topic = partitions_for_topic


@given(st.text(min_size=1, max_size=40), st.integers(1, 12))
def test_owner_partition_is_the_kafka_default_partitioner(key, n):
    b = key.encode()
    assert owner_partition(key, n) == DefaultPartitioner().partition("t", key, b, None, None, _Cluster(n))


def test_shell_reexports_the_same_rule():
    from stopwise.daemon.shell import kafka_io

    assert kafka_io.owner_partition is owner_partition


def _examples(n: int, seed: int = 3):
    rng = random.Random(seed)
    keyer = ContextKeyer(("task", "domain"))
    out = []
    for i in range(n):
        prof = THREE_CONTEXTS[i % 3]
        req = make_request(rng, prof, f"r{i}", float(i))
        req = req.__class__(req.request_id, req.ts, CONTEXTS[i % len(CONTEXTS)], req.features,
                            req.checkpoints, req.gold_answer_hash)
        inf, fb = to_events(req, 0.9, 0.3)
        out.append(from_events(inf, fb, keyer))
    return out


def _cfg(n: int):
    return parse_config({"topics": {"examples_partitions": n}, "context": {"min_support": 0},
                         "estimator": {"model": "none"}, "budget": {"em_drop": 0.05}})


def test_examples_are_learned_by_their_owner_for_the_key_and_its_ancestors():
    n = 3
    sc = ShardedControllers(_cfg(n))
    exs = _examples(900)
    for ex in exs:
        assert sc.learn(ex, 0.0)
    assert not sc.learn(exs[0], 0.0)                          # the owner dedupes a replay
    for p, ctl in enumerate(sc.shards):
        mine = [ex for ex in exs if owner_partition(ex.context_key, n) == p]
        assert ctl.unique_examples == len(mine)
        assert set(ctl.known_contexts()) == {k for ex in mine for k in parents(ex.context_key)} | {"*"}
    assert sc.unique_examples == len(exs) and sc.duplicates == 1


def test_each_context_is_published_once_by_its_owner_from_its_partial_view():
    n = 3
    sc = ShardedControllers(_cfg(n))
    for ex in _examples(900):
        sc.learn(ex, 0.0)
    decisions = sc.tick(10.0)
    keys = [d.record.context for d in decisions]
    assert len(keys) == len(set(keys))
    owners_know = {k for p, ctl in enumerate(sc.shards) for k in ctl.known_contexts() if owner_partition(k, n) == p}
    assert set(keys) == owners_know
    for d in decisions:   # exactly the owner's own record, built from the owner's examples only
        owner = sc.owner(d.record.context)
        assert owner.table()[d.record.context] == d.record
    assert set(sc.table()) == set(keys)
    # every shard decided more than it published (it knows '*' and its ancestors)
    all_decided = sum(len(ctl.table()) for ctl in sc.shards)
    assert all_decided > len(keys)
    assert owned(decisions, 0, n) == [d for d in decisions if owner_partition(d.record.context, n) == 0]


def test_one_shard_is_one_controller():
    cfg = _cfg(1)
    sc, ctl = ShardedControllers(cfg), Controller(cfg)
    for ex in _examples(600):
        sc.learn(ex, 0.0)
        ctl.learn(ex, 0.0)
    rows = lambda ds: [(d.record.context, d.record.threshold, d.record.explore_rate, d.record.version) for d in ds]
    assert rows(sc.tick(5.0)) == rows(ctl.tick(5.0))


def test_core_composes_the_configured_shards_with_independent_policies():
    from stopwise.policies import make_policy

    policy = make_policy("reference")
    core = Core(_cfg(3), policy=policy)
    shards = core.controller.shards
    assert len(shards) == 3 and shards[0].policy is policy
    assert len({id(c.policy) for c in shards}) == 3
    stats = core.controller.stats()
    assert stats["shards"] == 3.0 and stats["learned"] == 0.0
