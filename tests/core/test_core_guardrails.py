from __future__ import annotations

from stopwise.daemon.config import Config, GuardrailsConfig
from stopwise.daemon.core.engine import Controller
from stopwise.daemon.core.guardrails import Guardrails
from stopwise.policies.base import Policy, Proposal

from core_helpers import example, small_cfg


def guard(**kw) -> Guardrails:
    base = dict(min_evidence=0.0, max_step=1.0, min_threshold=0.5, max_threshold=1.0)
    base.update(kw)
    return Guardrails(GuardrailsConfig(**base))


def apply(g, thr, current=1.0, n=1e6, now=0.0, budget=0.01, kill=False):
    return g.apply("task=qa", thr, current=current, budget=budget, n_eff=n, now=now, kill=kill)


def test_clamp_to_bounds_but_one_is_always_allowed():
    g = guard(min_threshold=0.6, max_threshold=0.9)
    assert apply(g, 0.3, current=0.7) == (0.6, "clamp")
    assert apply(g, 0.95, current=0.9) == (0.9, "clamp")
    assert apply(g, 1.0, current=0.9) == (1.0, "")


def test_max_step_limits_aggressive_moves_only():
    g = guard(max_step=0.1)
    assert apply(g, 0.5, current=1.0) == (0.9, "step")
    assert apply(g, 0.85, current=0.9) == (0.85, "")
    assert apply(g, 0.99, current=0.6) == (0.99, "")     # conservative: at once


def test_min_evidence_keeps_the_conservative_default():
    g = guard(min_evidence=200)
    assert apply(g, 0.8, n=199) == (1.0, "min_evidence")
    assert apply(g, 0.8, n=200) == (0.8, "")


def test_kill_switch_from_config_or_flag():
    assert apply(guard(kill_switch=True), 0.8) == (1.0, "kill_switch")
    assert apply(guard(), 0.8, kill=True) == (1.0, "kill_switch")


def test_breaker_trips_on_confident_breach_and_recovers_after_cooldown():
    g = guard(breaker_window=200, breaker_margin=0.02, breaker_cooldown_s=100.0)
    for i in range(200):
        g.observe("task=qa", 1 if i % 10 == 0 else 0, 1.0)     # 10% realized drop
    assert apply(g, 0.8, current=0.8, now=0.0) == (1.0, "circuit_breaker")
    assert g.tripped("task=qa", 50.0) and g.trips("task=qa") == 1
    assert apply(g, 0.8, current=1.0, now=50.0) == (1.0, "circuit_breaker")
    assert apply(g, 0.8, current=1.0, now=101.0) == (0.8, "")   # window was cleared: recovered


def test_breaker_ignores_breach_within_margin_and_single_heavy_loss():
    g = guard(breaker_window=200, breaker_margin=0.02)
    for i in range(200):
        g.observe("k", 1 if i % 50 == 0 else 0, 1.0)           # 2% < 1% + 2%
    assert g.apply("k", 0.8, current=0.8, budget=0.01, n_eff=1e6, now=0.0) == (0.8, "")
    g2 = guard(breaker_window=200, breaker_margin=0.02)
    for i in range(199):
        g2.observe("k", 0, 1.0)
    g2.observe("k", 1, 50.0)                                    # one explored loss, weight 1/0.02
    assert g2.realized("k")[0] > 0.03
    assert g2.apply("k", 0.8, current=0.8, budget=0.01, n_eff=1e6, now=0.0) == (0.8, "")


class Fixed(Policy):
    name = "fixed"

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def decide(self, context_key, view, now):
        return Proposal(self.value, 0.05, f"fixed {self.value}")


def cfg(**guard_kw) -> Config:
    return small_cfg(guardrails=dict(min_evidence=0.0, max_step=1.0, hysteresis=0.01) | guard_kw)


def test_hysteresis_suppresses_small_changes():
    pol = Fixed(0.9)
    ctl = Controller(cfg(), pol)
    assert ctl.tick(0.0)[0].record.threshold == 0.9
    pol.value = 0.905
    assert ctl.tick(1.0) == []
    pol.value = 0.92
    (d,) = ctl.tick(2.0)
    assert d.record.threshold == 0.92 and d.previous_threshold == 0.9 and d.record.version == 2


def test_controller_kill_switch_publishes_one_everywhere_then_resumes():
    pol = Fixed(0.9)
    ctl = Controller(cfg(), pol)
    ctl.learn(example(((10, 0.5, "a"), (20, 0.95, "a")), key="task=qa"), 0.0)
    first = ctl.tick(0.0)
    assert {d.record.context for d in first} == {"*", "task=qa"}
    ctl.set_kill_switch(True)
    killed = ctl.tick(1.0)
    assert {d.record.context for d in killed} == {"*", "task=qa"}
    assert all(d.record.threshold == 1.0 and d.reason == "kill_switch" for d in killed)
    assert ctl.tick(2.0) == []                           # no re-publication while on
    ctl.set_kill_switch(False)
    back = ctl.tick(3.0)
    assert all(d.record.threshold == 0.9 for d in back) and len(back) == 2


def test_controller_breaker_reverts_context_to_conservative():
    pol = Fixed(0.8)
    c = cfg(breaker_window=100, breaker_cooldown_s=60.0)
    ctl = Controller(c, pol)
    bad = ((10, 0.85, "early"), (20, 0.9, "final"))      # served 0.8 stops on a changed answer
    good = ((10, 0.85, "final"), (20, 0.9, "final"))
    ctl.tick(0.0)
    for i in range(150):
        cps = bad if i % 5 == 0 else good                 # 20% realized drop
        ctl.learn(example(cps, threshold=0.8, explore=True, propensity=1.0, rid=f"r{i}", key="task=qa"), 1.0)
    decided = {d.record.context: d for d in ctl.tick(2.0)}
    assert decided["task=qa"].record.threshold == 1.0 and decided["task=qa"].reason == "circuit_breaker"
    for i in range(150, 300):
        ctl.learn(example(good, threshold=1.0, rid=f"r{i}", key="task=qa"), 3.0)
    assert "task=qa" not in {d.record.context for d in ctl.tick(30.0)}   # still cooling down
    recovered = {d.record.context: d for d in ctl.tick(63.0)}
    assert recovered["task=qa"].record.threshold == 0.8
