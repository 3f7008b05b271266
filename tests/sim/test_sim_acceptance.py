"""Acceptance: on a moderate stationary world the reference policy, closed
loop through the real core, keeps every context within its EM budget in
every window while saving tokens."""

from __future__ import annotations

from stopwise.daemon.config import Config
from stopwise.sim.oracle import compute_oracle
from stopwise.sim.scenarios import build
from stopwise.sim.simulator import simulate
from stopwise.sim.summary import summarize

from sim_helpers import world


def test_reference_policy_stays_within_budget_on_stationary_world():
    cfg = Config()
    rows, meta = build("stationary", seed=11, n=12000)
    reqs = world(rows)
    oracle = compute_oracle(reqs, cfg, window=1000)
    res = simulate(reqs, cfg, "reference", publish_delay=1.0)
    s = summarize(res.outcomes, oracle, cfg, window=1000, policy="reference", meta=meta)
    o = s["overall"]
    assert len(s["contexts"]) == 3 and o["windows"] == 12
    for key, c in s["contexts"].items():
        assert c["windows_over_budget"] == 0, (key, c)
        assert c["em_drop"] <= c["budget"], (key, c)
    assert o["em_drop_ci"][1] < cfg.budget.em_drop
    assert o["savings"] > 0.05 and o["fraction_of_oracle"] > 0.1       # it does stop early
    assert res.thresholds and min(t["threshold"] for t in res.thresholds) < 1.0
