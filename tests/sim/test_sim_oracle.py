"""The hindsight oracle on hand-built worlds (exact answers)."""

from __future__ import annotations


from hypothesis import given, strategies as st

from stopwise.daemon.config import parse_config
from stopwise.daemon.stoprule import stop_index
from stopwise.sim.oracle import compute_oracle, grid_outcomes, oracle_grid, window_bounds
from stopwise.sim.world import WorldRequest

from sim_helpers import row, world


def test_oracle_picks_most_saving_tau_within_budget_per_window():
    cfg = parse_config({"grid": {"taus": [0.6, 0.8]}, "budget": {"em_drop": 0.25}})
    # window 1 (4 requests): at 0.6 two of four lose the correct answer (drop 0.5 > 0.25);
    # at 0.8 one of four loses it (0.25, within) -> 0.8 saves 4 * 10 tokens.
    risky = [[10, 0.6, "w"], [20, 0.8, "w"], [30, 0.9, "g"]]   # wrong at both 0.6 and 0.8
    fine = [[10, 0.6, "w"], [20, 0.8, "g"], [30, 0.9, "g"]]     # 0.6 wrong, 0.8 right
    rows = [row("a", 0, risky, gold="g"), row("b", 1, fine, gold="g"), row("c", 2, fine, gold="g"),
            row("d", 3, fine, gold="w"),    # full run wrong: stopping early cannot lose EM here (gains it at 0.6)
            # window 2: all safe at 0.6
            *[row(f"e{i}", 4 + i, [[10, 0.7, "g"], [30, 0.9, "g"]], gold="g") for i in range(4)]]
    o = compute_oracle(world(rows), cfg, window=4)
    w1, w2 = o.windows["task=qa"]
    assert (w1.threshold, w1.saved_tokens, w1.full_tokens, w1.n) == (0.8, 40, 120, 4)
    assert w1.em_drop == 0.25 and w1.budget == 0.25
    assert (w2.threshold, w2.saved_tokens, w2.em_drop) == (0.6, 80, 0.0)
    assert o.saved() == 120 and o.saved("task=qa") == 120
    assert o.saved_per_request == [10, 10, 10, 10, 20, 20, 20, 20]
    assert oracle_grid(cfg) == (0.6, 0.8, 1.0)
    curve = {p["threshold"]: (p["savings"], p["em_drop"]) for p in o.tradeoff["task=qa"]}
    assert curve[1.0] == (0.0, 0.0)
    assert curve[0.6] == (160 / 240, (1 + 1 + 1 - 1) / 8)


def test_per_context_windows_and_budget_override():
    cfg = parse_config({"grid": {"taus": [0.6]}, "budget": {"em_drop": 0.0, "per_context": {"task=b": 1.0}}})
    lossy = [[10, 0.7, "w"], [20, 0.9, "g"]]
    rows = [row(f"a{i}", i, lossy, ctx={"task": "a"}) for i in range(2)] + \
           [row(f"b{i}", i, lossy, ctx={"task": "b"}, gold="g") for i in range(2)]
    rows[0]["gold_answer_hash"] = rows[1]["gold_answer_hash"] = "g"
    o = compute_oracle(world(rows), cfg, window=2)
    assert o.windows["task=a"][0].threshold == 1.0 and o.windows["task=a"][0].saved_tokens == 0
    assert o.windows["task=b"][0].threshold == 0.6 and o.windows["task=b"][0].saved_tokens == 20


def test_unknown_truth_counts_tokens_but_not_drop():
    cfg = parse_config({"grid": {"taus": [0.6]}})
    rows = [row("a", 0, [[10, 0.7, "w"], [20, 0.9, "g"]], gold=None)]
    o = compute_oracle(world(rows), cfg, window=1)
    assert o.windows["task=qa"][0].threshold == 0.6 and o.windows["task=qa"][0].em_drop == 0.0


def test_window_bounds():
    assert window_bounds(0, 3) == []
    assert window_bounds(7, 3) == [(0, 3), (3, 6)]
    assert window_bounds(8, 3) == [(0, 3), (3, 6), (6, 8)]


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.data())
def test_grid_outcomes_agree_with_the_shared_stop_rule(scores, data):
    cps = [[10 * (i + 1), s, f"a{i}"] for i, s in enumerate(scores)]
    req = WorldRequest.model_validate(row("r", 0, cps, gold="a0"))
    taus = sorted(set(data.draw(st.lists(st.floats(0, 1), min_size=1, max_size=6))))
    g = grid_outcomes(req, 0, "k", taus)
    for tau, tok in zip(taus, g.tokens):
        assert tok == cps[stop_index(cps, tau)][0]
