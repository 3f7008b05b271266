"""Summary fields on hand-built outcomes: savings, EM drop and its interval,
windows over budget, fraction of the oracle, drift recovery."""

from __future__ import annotations

import pytest

from stopwise.daemon.config import parse_config
from stopwise.sim.oracle import compute_oracle
from stopwise.sim.summary import OUTCOME_FIELDS, Outcome, mean_ci, recovery, summarize

from sim_helpers import row, world


def out(i, ctx, used, full, em, em_full, ts=None):
    return Outcome(f"r{i}", ctx, 0.9, False, 0, used, full, "a", em, em_full, float(i if ts is None else ts))


def test_summary_fields_per_context_and_overall():
    cfg = parse_config({"grid": {"taus": [0.6]}, "budget": {"em_drop": 0.1, "per_context": {"task=b": 0.5}}})
    reqs = world([row(f"r{i}", i, [[10, 0.7, "g"], [40, 0.9, "g"]], gold="g", ctx={"task": "a" if i < 4 else "b"})
                   for i in range(6)])
    oracle = compute_oracle(reqs, cfg, window=2)   # every request saves 30 at 0.6 -> 180
    outs = [out(0, "task=a", 40, 40, 1, 1), out(1, "task=a", 10, 40, 0, 1),   # window 1: drop 0.5 > 0.1
            out(2, "task=a", 10, 40, 1, 1), out(3, "task=a", 10, 40, 1, 1),   # window 2: drop 0
            out(4, "task=b", 10, 40, 0, 1), out(5, "task=b", 10, 40, None, None)]  # 1 known drop of 1 > 0.5
    s = summarize(outs, oracle, cfg, window=2, policy="p", meta={"scenario": "hand", "events": [
        {"kind": "abrupt_drift", "context": "task=a", "ts": 2.0}, {"kind": "x", "context": "task=zzz", "ts": 0}]})
    a, b, o = s["contexts"]["task=a"], s["contexts"]["task=b"], s["overall"]
    assert set(a) >= {"n", "savings", "em_drop", "em_drop_ci", "share_windows_over_budget", "fraction_of_oracle",
                      "oracle_tokens_saved", "tokens_saved", "budget", "windows", "windows_over_budget"}
    assert (a["n"], a["tokens_full"], a["tokens_used"], a["tokens_saved"]) == (4, 160, 70, 90)
    assert a["savings"] == pytest.approx(90 / 160) and a["em_drop"] == 0.25
    assert a["em_drop_ci"][0] < 0.25 < a["em_drop_ci"][1]
    assert (a["windows"], a["windows_over_budget"], a["share_windows_over_budget"]) == (2, 1, 0.5)
    assert a["oracle_tokens_saved"] == 120 and a["fraction_of_oracle"] == pytest.approx(90 / 120)
    assert (b["budget"], b["em_drop"], b["windows_over_budget"]) == (0.5, 1.0, 1)
    assert (o["n"], o["windows"], o["windows_over_budget"]) == (6, 3, 2)
    assert o["fraction_of_oracle"] == pytest.approx(150 / 180)
    assert o["worst_context_share_over_budget"] == 1.0
    assert s["policy"] == "p" and s["scenario"] == "hand"
    assert [e["context"] for e in s["events"]] == ["task=a"]           # unknown contexts ignored
    assert s["events"][0]["recovery"]["requests"] == 0                  # from ts 2 on: within budget


def test_recovery_counts_requests_until_settled():
    rows = [out(i, "c", 1, 1, 0 if (i < 6 and i % 2) else 1, 1) for i in range(12)]   # first 3 windows of 2 over
    r = recovery(rows, since_ts=0.0, budget=0.1, window=2)
    assert r["windows"] == 6 and r["windows_over_budget"] == 3 and r["requests"] == 6
    never = [out(i, "c", 1, 1, 0, 1) for i in range(4)]
    assert recovery(never, 0.0, 0.1, 2)["requests"] is None


def test_mean_ci():
    assert mean_ci([], 0.95) == (0.0, 0.0, 0.0)
    m, lo, hi = mean_ci([0, 1] * 50, 0.95)
    assert m == 0.5 and hi - lo == pytest.approx(2 * 1.96 * (0.25 * 100 / 99 / 100) ** 0.5, rel=1e-3)


def test_outcome_public_fields_are_exactly_the_contract():
    assert list(out(0, "c", 1, 2, 1, 1).public()) == list(OUTCOME_FIELDS) == [
        "request_id", "context", "threshold", "explored", "stop_index", "tokens_used", "tokens_full",
        "answer_hash", "em", "em_full"]


def test_exploration_share_token_cost_and_em_budget_use():
    cfg = parse_config({"grid": {"taus": [0.6]}, "budget": {"em_drop": 0.1, "per_context": {"task=b": 0.4}}})
    cps = [[10, 0.7, "g"], [25, 0.8, "g"], [40, 0.9, "g"]]
    ctx = lambda i: {"task": "a" if i < 4 else "b"}   # noqa: E731
    reqs = world([row(f"r{i}", i, cps, gold="g", ctx=ctx(i)) for i in range(6)])
    oracle = compute_oracle(reqs, cfg, window=2)

    def o(i, thr, explored, used, em):
        return Outcome(f"r{i}", f"task={ctx(i)['task']}", thr, explored, 2 if explored else 0, used, 40, "g", em, 1, float(i))

    outs = [o(0, 0.6, True, 40, 1),    # explored at 0.6: would have stopped at 10 -> 30 extra tokens
            o(1, 0.75, True, 40, 1),   # explored at 0.75: would have stopped at 25 -> 15 extra
            o(2, 0.6, False, 10, 0), o(3, 0.6, False, 10, 1),
            o(4, 1.0, True, 40, 1),    # explored at 1.0: costs nothing extra
            o(5, 0.6, False, 10, 1)]
    s = summarize(list(reversed(outs)), oracle, cfg, window=2, requests=reqs)   # order need not match
    a, b, ov = s["contexts"]["task=a"], s["contexts"]["task=b"], s["overall"]
    assert (a["explored"], a["explored_share"], a["explore_tokens"]) == (2, 0.5, 45)
    assert a["explore_tokens_of_full"] == pytest.approx(45 / 160)
    assert a["explore_tokens_of_saved"] == pytest.approx(45 / (160 - 100))
    assert (b["explored_share"], b["explore_tokens"]) == (0.5, 0)
    assert (ov["explored"], ov["explore_tokens"]) == (3, 45) and ov["explored_share"] == pytest.approx(0.5)
    assert a["em_drop"] == 0.25 and a["em_budget_use"] == pytest.approx(2.5)
    assert b["em_drop"] == 0.0 and b["em_budget_use"] == 0.0
    # overall budget: per-context budgets weighted by scored requests (4 x 0.1 + 2 x 0.4) / 6
    assert ov["budget"] == pytest.approx(0.2) and ov["em_budget_use"] == pytest.approx((1 / 6) / 0.2)
    # without the world the cost is unknown, the share is not
    bare = summarize(outs, oracle, cfg, window=2)["overall"]
    assert bare["explore_tokens"] is None and bare["explore_tokens_of_saved"] is None and bare["explored"] == 3
    glob = parse_config({"grid": {"taus": [0.6]}, "budget": {"em_drop": 0.1, "mode": "global"}})
    assert summarize(outs, oracle, glob, window=2)["overall"]["budget"] == 0.1
    with pytest.raises(ValueError, match="not in the world"):
        summarize(outs, oracle, cfg, window=2, requests=reqs[:3])
