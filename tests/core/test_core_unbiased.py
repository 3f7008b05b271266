"""The Horvitz-Thompson weighting of counterfactual.py recovers the true
risk curve from served traffic (censored runs and exploration mixed),
where naively averaging the complete runs does not."""

from __future__ import annotations

import math
import random

from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.counterfactual import evaluate, with_no_stop
from stopwise.daemon.core.estimator import Estimator
from stopwise.daemon.core.examples import from_events
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events, true_curves

TAUS = with_no_stop((0.5, 0.7, 0.9, 0.95, 0.99))


def test_weighted_estimates_match_the_true_curve():
    prof = THREE_CONTEXTS[1]                      # middle
    truth = true_curves(prof, TAUS, n=30000, seed=1)
    keyer = ContextKeyer(("task", "domain"))
    est = Estimator(TAUS, half_life=1e12, confidence=0.95)
    naive_sum = [0.0] * len(TAUS)
    naive_n = 0
    rng = random.Random(2)
    for i in range(8000):
        req = make_request(rng, prof, f"u{i}", 0.0)
        inf, fb = to_events(req, 0.97, 0.1)       # served 0.97, 10% exploration
        cf = evaluate(from_events(inf, fb, keyer), TAUS)
        est.update("k", cf)
        if cf.complete:
            naive_n += 1
            naive_sum = [s + lo for s, lo in zip(naive_sum, cf.loss)]
    st = est.stats("k")
    assert st.n_informative < 8000                # censored runs were really there
    for i, t in enumerate(TAUS[:-1]):
        lo_true, cost_true = truth[t]
        se = math.sqrt(max(lo_true * (1 - lo_true), 1e-4) / st.n_eff)
        assert abs(st.loss[i] - lo_true) < 4 * se + 1e-3, (t, st.loss[i], lo_true)
        assert abs(st.cost[i] - cost_true) < 0.03, (t, st.cost[i], cost_true)
    # averaging complete runs without weights is biased: runs that never
    # crossed 0.97 (hard ones, whose answer settles late) are over-represented
    naive = naive_sum[0] / naive_n
    assert naive > truth[0.5][0] + 4 * math.sqrt(truth[0.5][0] / naive_n), (naive, truth[0.5][0])
