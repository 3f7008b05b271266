from __future__ import annotations


import pytest

from stopwise.daemon.core.engine import Controller, Core, Decision, allocate_global
from stopwise.daemon.core.estimator import TauStats
from stopwise.daemon.records import decode_threshold
from stopwise.sim.traces import THREE_CONTEXTS

from core_helpers import Loop, example, feedback, inference, small_cfg


def test_first_tick_publishes_root_with_ttl_and_unsigned_record():
    cfg = small_cfg(publish={"record_ttl_s": 120.0})
    (d,) = Controller(cfg).tick(now=1000.0)
    rec = d.record
    assert rec.context == "*" and rec.threshold == 1.0 and rec.version == 1 and rec.sig is None
    assert rec.issued_at == 1000.0 and rec.expires_at == 1120.0 and rec.policy == "reference"
    assert d.previous_threshold is None
    audit = d.audit()
    assert audit["previous_threshold"] is None and audit["context"] == "*" and "reason" in audit
    assert decode_threshold(rec.to_bytes()) == rec


def test_learn_dedupes_by_request_id_and_counts():
    ctl = Controller(small_cfg())
    ex = example(((10, 0.5, "a"), (20, 0.9, "a")), rid="x")
    assert ctl.learn(ex, 0.0) is True
    assert ctl.learn(ex, 1.0) is False
    assert ctl.unique_examples == 1
    st = ctl.stats()
    assert st["learned"] == 1 and st["duplicates"] == 1 and st["contexts"] == 2   # '*' and 'task=qa'


def test_every_example_updates_its_ancestors():
    ctl = Controller(small_cfg())
    ctl.learn(example(((10, 0.5, "a"), (20, 0.9, "a")), key="task=qa|domain=x"), 0.0)
    assert ctl.known_contexts() == ["*", "task=qa", "task=qa|domain=x"]
    assert all(ctl.estimator.stats(k).n_examples == 1 for k in ctl.known_contexts())


def test_unchanged_contexts_are_not_republished_until_half_ttl():
    cfg = small_cfg(publish={"record_ttl_s": 100.0})
    ctl = Controller(cfg)
    assert len(ctl.tick(0.0)) == 1
    assert ctl.tick(10.0) == []
    (d,) = ctl.tick(50.0)                     # refresh before expiry
    assert d.record.version == 2 and d.record.expires_at == 150.0


def test_core_joins_then_learns_and_expires():
    core = Core(small_cfg(join={"ttl_s": 10.0}))
    assert core.on_feedback(feedback("a"), 0.0) == []
    assert len(core.on_inference(inference("a"), 1.0)) == 1
    (unlabelled,) = core.on_inference(inference("b"), 2.0)      # learned at once, without a label
    assert unlabelled.em is None and unlabelled.gold_answer_hash is None and not unlabelled.followup
    core.tick(20.0)
    # 'b' never got feedback: its unlabelled evidence stays learned, it is never an EM=1
    assert core.joiner.stats.expired_no_feedback == 1 and core.controller.unique_examples == 2
    assert core.controller.stats()["labelled"] == 1
    assert core.controller.owner("task=qa").estimator.stats("task=qa").n_informative == 2


def test_reconfigure_keeps_learned_state_and_applies_new_budget():
    cfg = small_cfg()
    core = Core(cfg)
    loop = Loop(core, cfg, THREE_CONTEXTS[:1], seed=3)
    loop.run(3000, measure=False)
    before = core.controller.unique_examples
    n_eff = core.controller.owner("task=extract|domain=general").estimator.n_eff("task=extract|domain=general")
    new = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"em_drop": 0.0})})
    core.reconfigure(new)
    assert core.controller.unique_examples == before
    assert core.controller.owner("task=extract|domain=general").estimator.n_eff("task=extract|domain=general") == pytest.approx(n_eff)
    table = {d.record.context: d.record for d in core.tick(1000.0)}
    assert table["task=extract|domain=general"].threshold == 1.0     # zero budget: no early stop


def test_reconfigure_with_new_policy_builds_it():
    cfg = small_cfg()
    ctl = Controller(cfg)
    new = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"name": "static", "params": {"threshold": 0.9}})})
    ctl.reconfigure(new)
    assert ctl.policy.name == "static" and ctl.policy.threshold == 0.9


def test_unknown_policy_in_config_is_a_clear_error():
    cfg = small_cfg(policy={"name": "nope"})
    with pytest.raises(ValueError, match="valid names"):
        Controller(cfg)


def test_global_allocation_spends_budget_where_it_buys_most():
    cheap = TauStats((0.5, 0.9, 1.0), (0, 0, 0), (0.004, 0.002, 0.0), (0.2, 0.5, 1.0), 1e4, 1, 1)
    dear = TauStats((0.5, 0.9, 1.0), (0, 0, 0), (0.05, 0.015, 0.0), (0.6, 0.9, 1.0), 1e4, 1, 1)
    alloc = allocate_global({"a": cheap, "b": dear}, {"a": 0.5, "b": 0.5}, 0.01, {})
    assert alloc == {"a": 0.004, "b": 0.015}           # 0.5*0.004 + 0.5*0.015 <= 0.01
    capped = allocate_global({"a": cheap, "b": dear}, {"a": 0.5, "b": 0.5}, 0.01, {"b": 0.01})
    assert capped["b"] == 0.0                           # per-context cap respected


def test_global_mode_runs_in_the_controller():
    cfg = small_cfg(budget={"mode": "global"})
    core = Core(cfg)
    Loop(core, cfg, THREE_CONTEXTS, seed=2).run(3000)
    assert "*" in core.controller.table()


def test_decision_is_frozen():
    (d,) = Controller(small_cfg()).tick(0.0)
    assert isinstance(d, Decision)
    with pytest.raises(Exception):
        d.reason = "x"   # type: ignore[misc]
