"""Determinism under the seed and pickle-resume equivalence."""

from __future__ import annotations

import random

from stopwise.daemon.config import Config
from stopwise.daemon.core.engine import Core, dump_state, load_state
from stopwise.daemon.core.examples import from_events
from stopwise.sim.traces import THREE_CONTEXTS, to_events, traffic

from core_helpers import Loop


def _records(decisions):
    return [(d.record.context, d.record.threshold, d.record.explore_rate, d.record.version, d.reason)
            for d in decisions]


def test_same_seed_same_decisions():
    cfg = Config()
    a, b = Core(cfg), Core(cfg)
    la, lb = Loop(a, cfg, THREE_CONTEXTS, seed=4), Loop(b, cfg, THREE_CONTEXTS, seed=4)
    la.run(3000)
    lb.run(3000)
    assert _records(la.decisions) == _records(lb.decisions)
    assert [dump_state(c.estimator) for c in a.controller.shards] == [dump_state(c.estimator) for c in b.controller.shards]


def test_pickled_and_restored_core_continues_identically():
    cfg = Config()
    uninterrupted = Loop(Core(cfg), cfg, THREE_CONTEXTS, seed=9)
    uninterrupted.run(4000)

    first = Loop(Core(cfg), cfg, THREE_CONTEXTS, seed=9)
    first.run(2000)
    restored_core = load_state(dump_state(first.core))
    assert restored_core.controller.unique_examples == first.core.controller.unique_examples
    # continue with the restored core, same traffic generator state and table
    first.core = restored_core
    first.run(2000)

    assert _records(first.decisions) == _records(uninterrupted.decisions)
    assert first.core.controller.unique_examples == uninterrupted.core.controller.unique_examples
    assert first.core.joiner.stats == uninterrupted.core.joiner.stats
    t1 = {k: r.threshold for k, r in first.core.controller.table().items()}
    t2 = {k: r.threshold for k, r in uninterrupted.core.controller.table().items()}
    assert t1 == t2


def test_replayed_examples_after_restore_are_not_double_counted():
    cfg = Config()
    loop = Loop(Core(cfg), cfg, THREE_CONTEXTS, seed=2)
    loop.run(500)
    snap = dump_state(loop.core.controller)
    ctl = load_state(snap)
    # replay: the same joined examples (the loop's first 50 requests) arrive again after a restart
    replayed = 0
    for req in traffic(random.Random(2), THREE_CONTEXTS, 50):
        inf, fb = to_events(req, 1.0, 0.2)
        replayed += ctl.learn(from_events(inf, fb, loop.keyer), 10.0)
    assert replayed == 0
    assert ctl.unique_examples == loop.core.controller.unique_examples
