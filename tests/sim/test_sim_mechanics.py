"""The simulator's own mechanics on a tiny hand-built world, with a scripted
core: thresholds in force by publish delay and fallback, exploration,
truncation, feedback timing and content, exact outcomes."""

from __future__ import annotations

import pytest

from stopwise.daemon.stoprule import explore_draw
from stopwise.sim.simulator import SimulationError, ThresholdTable, resolve_policy, simulate

from sim_helpers import ScriptedCore, row, world

CPS = [[10, 0.5, "x"], [20, 0.9, "y"], [30, 0.95, "y"]]


def test_thresholds_in_force_follow_publish_delay_fallback_and_truncate(cfg):
    rows = [
        row("r0", 0.0, CPS),                                          # default 1.0
        row("r1", 1.2, CPS),                                          # published at 1.0, visible at 1.5: still default
        row("r2", 1.6, CPS, delay=0.1),                               # task=qa -> 0.8: stops at index 1
        row("r3", 1.7, CPS, ctx={"task": "qa", "domain": "finance"}),  # falls back to task=qa
        row("r4", 1.8, CPS, ctx={"task": "math"}),                    # no record in its chain: default
        row("r5", 3.0, CPS, ctx={"task": "math"}, gold="x"),          # '*' at 0.6 with explore 1.0: explores
        row("r6", 3.1, CPS, ctx={}, override=0, delay=2.0),           # '*' record; label override
    ]
    core = ScriptedCore({1.0: [{"context": "task=qa", "threshold": 0.8}],
                         2.0: [{"context": "*", "threshold": 0.6, "explore_rate": 1.0}]})
    res = simulate(world(rows), cfg, core=core, publish_delay=0.5)
    got = [(o.request_id, o.context, o.threshold, o.explored, o.stop_index, o.tokens_used, o.answer_hash, o.em, o.em_full)
           for o in res.outcomes]
    assert got == [
        ("r0", "task=qa", 1.0, False, 2, 30, "y", 1, 1),
        ("r1", "task=qa", 1.0, False, 2, 30, "y", 1, 1),
        ("r2", "task=qa", 0.8, False, 1, 20, "y", 1, 1),
        ("r3", "task=qa|domain=finance", 0.8, False, 1, 20, "y", 1, 1),
        ("r4", "task=math", 1.0, False, 2, 30, "y", 1, 1),
        ("r5", "task=math", 0.6, True, 2, 30, "y", 0, 0),
        ("r6", "*", 0.6, True, 2, 30, "y", 1, 1),
    ]
    assert all(o.tokens_full == 30 for o in res.outcomes)
    inf = {ev.request_id: (ev, now) for ev, now in core.inferences}
    # truncated at the stop point unless exploring; the event time is the request's
    ev2, now2 = inf["r2"]
    assert now2 == 1.6 and ev2.ts == 1.6
    assert [list(c) for c in ev2.checkpoints] == CPS[:2] and ev2.stop_index == 1 and ev2.tokens_used == 20
    assert ev2.threshold_version == 1 and ev2.complete is False and ev2.explore is False
    assert ev2.propensity == 1.0 and ev2.tokens_budget == 30
    ev5, _ = inf["r5"]
    assert ev5.explore and len(ev5.checkpoints) == 3 and ev5.complete and ev5.propensity == 1.0
    assert [list(c) for c in inf["r0"][0].checkpoints] == CPS and inf["r0"][0].complete
    # feedback after its delay, graded against gold, gold sent; override sent as the label without gold
    fbs = {ev.request_id: (ev, now) for ev, now in core.feedbacks}
    assert set(fbs) == {f"r{i}" for i in range(7)}
    fb2, t2 = fbs["r2"]
    assert t2 == pytest.approx(1.7) and fb2.ts == pytest.approx(1.7) and fb2.em == 1 and fb2.gold_answer_hash == "y"
    fb6, t6 = fbs["r6"]
    assert t6 == pytest.approx(5.1) and fb6.em == 0 and fb6.gold_answer_hash is None
    # ticks every interval of event time, and the run drains past the last feedback
    assert core.ticks[:3] == [1.0, 2.0, 3.0] and core.ticks[-1] >= 5.1
    # thresholds.jsonl rows carry the event time and visibility
    assert [(t["t"], t["visible_at"], t["context"], t["threshold"]) for t in res.thresholds] == [
        (1.0, 1.5, "task=qa", 0.8), (2.0, 2.5, "*", 0.6)]


def test_feedback_absent_or_unlabelled_is_not_sent(cfg):
    rows = [row("a", 0.0, CPS, present=False), row("b", 0.5, CPS, gold=None), row("c", 0.6, CPS, gold=None, override=1)]
    core = ScriptedCore({})
    res = simulate(world(rows), cfg, core=core)
    assert [ev.request_id for ev, _ in core.feedbacks] == ["c"]
    assert res.stats["feedback_unlabelled"] == 1
    assert [(o.em, o.em_full) for o in res.outcomes] == [(1, 1), (None, None), (1, 1)]


def test_exploration_uses_the_shared_hash_draw(cfg):
    rows = [row(f"q{i}", i * 0.01 + 2.0, CPS) for i in range(200)]
    core = ScriptedCore({1.0: [{"context": "task=qa", "threshold": 0.8, "explore_rate": 0.3}]})
    res = simulate(world([row("w", 0.0, CPS)] + rows), cfg, core=core, publish_delay=0.0)
    for o in res.outcomes[1:]:
        assert o.explored == (explore_draw(o.request_id) < 0.3)
        assert (o.stop_index, o.tokens_used) == ((2, 30) if o.explored else (1, 20))
    props = {ev.request_id: ev.propensity for ev, _ in core.inferences}
    assert {round(props[o.request_id], 6) for o in res.outcomes[1:]} == {0.3, 0.7}


def test_expired_record_falls_back_to_default(cfg):
    rows = [row("a", 1.2, CPS), row("b", 2.5, CPS)]
    core = ScriptedCore({1.0: [{"context": "task=qa", "threshold": 0.8, "expires_at": 2.0}]})
    res = simulate(world([row("w", 0.0, CPS)] + rows), cfg, core=core, publish_delay=0.0)
    assert [o.threshold for o in res.outcomes] == [1.0, 0.8, 1.0]


def test_table_keeps_newest_version():
    from stopwise.daemon.records import ThresholdRecord

    t = ThresholdTable(1.0, 0.0)
    mk = lambda v, thr: ThresholdRecord(context="*", threshold=thr, explore_rate=0.1, version=v, issued_at=v, expires_at=99, policy="p")
    t.apply(mk(2, 0.7))
    t.apply(mk(1, 0.9))
    assert t.lookup("task=a", 0.0) == (0.7, 0.1, 2, "*")


def test_policy_aliases_and_errors():
    assert resolve_policy("none") == ("static", {"threshold": 1.0})
    assert resolve_policy("static-0.9") == ("static", {"threshold": 0.9})
    with pytest.raises(SimulationError, match="static-<tau>"):
        resolve_policy("static-abc")
    with pytest.raises(SimulationError, match=r"\[0, 1\]"):
        resolve_policy("static-1.5")


def test_empty_world_is_refused(cfg):
    with pytest.raises(SimulationError, match="no requests"):
        simulate([], cfg, core=ScriptedCore({}))


def test_cheaply_built_events_are_valid_records(cfg):
    from stopwise.daemon.records import decode_feedback, decode_inference

    rows = [row(f"r{i}", i * 0.3, CPS, override=(i % 2) if i % 3 == 0 else None, delay=0.2) for i in range(12)]
    core = ScriptedCore({1.0: [{"context": "task=qa", "threshold": 0.8, "explore_rate": 0.5}]})
    simulate(world(rows), cfg, core=core, publish_delay=0.0)
    assert core.inferences and core.feedbacks
    for ev, _ in core.inferences:
        assert decode_inference(ev.to_bytes()) == ev
    for ev, _ in core.feedbacks:
        assert decode_feedback(ev.to_bytes()) == ev


def test_idle_gaps_are_crossed_without_ticking_every_interval(cfg):
    rows = [row("a", 0.0, CPS, present=False), row("b", 1e7, CPS, present=False)]
    core = ScriptedCore({})
    res = simulate(world(rows), cfg, core=core)
    assert len(res.outcomes) == 2
    stride = cfg.publish.record_ttl_s / 8
    assert len(core.ticks) < 1e7 / stride + stride / cfg.publish.interval_s + 10   # 1 s ticks only near traffic
    gaps = [b - a for a, b in zip(core.ticks, core.ticks[1:])]
    assert max(gaps) <= cfg.publish.record_ttl_s / 8 + 1e-6
    assert all(abs(t - round(t)) < 1e-6 for t in core.ticks)      # still on the 1 s grid


def test_config_policy_params_apply_to_the_configured_policy(cfg):
    """`policy.params` of the config reach the policy of the same name (and
    only that one): a static policy configured at 0.9 serves 0.9."""
    from stopwise.sim.simulator import build_policy

    conf = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"name": "static", "params": {"threshold": 0.9}})})
    assert build_policy("static", conf).threshold == 0.9
    assert build_policy("static-0.8", conf).threshold == 0.8   # alias params win
    assert build_policy("static", None).threshold == 1.0
