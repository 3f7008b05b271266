"""Every scenario generates a valid, deterministic world and runs small
through the real core."""

from __future__ import annotations

import json

import pytest

from stopwise.daemon.config import Config
from stopwise.sim.oracle import compute_oracle
from stopwise.sim.scenarios import SCENARIOS, build, generate_world
from stopwise.sim.simulator import simulate
from stopwise.sim.summary import summarize
from stopwise.sim.world import read_meta, read_world

from sim_helpers import world

N = 300


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_generates_and_runs(tmp_path, name):
    path = tmp_path / f"{name}.jsonl"
    count, meta = generate_world(name, seed=3, n=N, out=path)
    assert count == N and meta["scenario"] == name and read_meta(path) == json.loads(json.dumps(meta))
    reqs, errors = read_world(path)
    assert errors == [] and len(reqs) == N
    assert all(r.checkpoints[-1][0] > 0 for r in reqs)
    cfg = Config()
    oracle = compute_oracle(reqs, cfg, window=50)
    res = simulate(reqs, cfg, "reference")
    assert len(res.outcomes) == N
    s = summarize(res.outcomes, oracle, cfg, window=50, policy="reference", meta=meta)
    assert s["overall"]["n"] == N and 0.0 <= s["overall"]["savings"] <= 1.0


def test_scenarios_are_deterministic_and_differ_by_seed():
    a, _ = build("abrupt_drift", seed=5, n=50)
    b, _ = build("abrupt_drift", seed=5, n=50)
    c, _ = build("abrupt_drift", seed=6, n=50)
    assert a == b and a != c


def test_scenario_shapes():
    rows, meta = build("sparse_feedback", seed=1, n=4000)
    share = sum(r["feedback"]["present"] for r in rows) / len(rows)
    assert 0.03 < share < 0.07
    rows, _ = build("noisy_labels", seed=1, n=4000)
    noisy = [r for r in rows if r["feedback"].get("em_override") is not None]
    assert 0.07 < len(noisy) / len(rows) < 0.13
    for r in noisy:   # the label contradicts the full answer's truth
        assert r["feedback"]["em_override"] == int(r["checkpoints"][-1][2] != r["gold_answer_hash"])
    rows, _ = build("delayed_feedback", seed=1, n=4000)
    assert sum(r["feedback"]["delay_s"] for r in rows) / len(rows) > 30
    rows, meta = build("cold_start", seed=1, n=900)
    first = min(i for i, r in enumerate(rows) if r["context"]["task"] == "code")
    assert first >= 300 and meta["events"][0]["ts"] == 3.0
    rows, meta = build("mix_shift", seed=1, n=6000)
    early = sum(r["context"]["task"] == "extract" for r in rows[:3000])
    late = sum(r["context"]["task"] == "extract" for r in rows[3000:])
    assert early > 3 * late


def test_abrupt_drift_makes_the_middle_context_riskier():
    cfg = Config()
    rows, meta = build("abrupt_drift", seed=2, n=12000)
    reqs = world(rows)
    ev = meta["events"][0]
    before = [r for r in reqs if r.ts < ev["ts"]]
    after = [r for r in reqs if r.ts >= ev["ts"]]
    curve = lambda rs: {p["threshold"]: p["em_drop"] for p in compute_oracle(rs, cfg, 1000).tradeoff[ev["context"]]}
    assert curve(after)[0.9] > curve(before)[0.9] + 0.01


def test_unknown_scenario_lists_valid_names():
    with pytest.raises(ValueError, match="valid: abrupt_drift, cold_start"):
        build("nope", seed=0, n=10)
