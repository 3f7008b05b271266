from __future__ import annotations

import random

from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.counterfactual import evaluate, with_no_stop
from stopwise.daemon.core.examples import from_events
from stopwise.daemon.core.risk_model import RiskModel, checkpoint_features
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

KEYER = ContextKeyer(("task", "domain"))
TAUS = with_no_stop((0.5, 0.9))


def _examples(rng, n, prefix):
    out = []
    for i in range(n):
        req = make_request(rng, rng.choice(THREE_CONTEXTS), f"{prefix}{i}", 0.0)
        inf, fb = to_events(req, 1.0, 0.0)
        out.append(from_events(inf, fb, KEYER))
    return out


def test_model_is_calibrated_on_synthetic_traffic():
    rng = random.Random(11)
    model = RiskModel(seed=3, learning_rate=0.05)
    for ex in _examples(rng, 5000, "t"):
        model.learn(ex, evaluate(ex, TAUS))
    bins = [[0, 0.0, 0] for _ in range(10)]
    n = 0
    for ex in _examples(rng, 1500, "h"):
        cps = ex.checkpoints
        for k in range(len(cps)):
            p = model.predict_checkpoint(ex, k)
            y = int(ex.em == 1 and cps[k][2] != cps[-1][2])
            b = bins[min(9, int(p * 10))]
            b[0] += 1
            b[1] += p
            b[2] += y
            n += 1
    ece = sum(abs(b[1] - b[2]) for b in bins) / n
    assert ece < 0.03, bins
    for count, psum, ysum in bins:
        if count >= 300:
            assert abs(psum / count - ysum / count) < 0.15, bins
    # and it discriminates: the low bin is nearly clean, the upper bins are risky
    assert bins[0][2] / bins[0][0] < 0.05
    assert sum(b[2] for b in bins[4:]) / sum(b[0] for b in bins[4:]) > 0.4


def test_prior_orders_contexts_by_risk():
    rng = random.Random(5)
    model = RiskModel(seed=3, learning_rate=0.05)
    exs = _examples(rng, 4000, "t")
    for ex in exs:
        model.learn(ex, evaluate(ex, TAUS))
    by_task = {}
    for ex in exs[-600:]:
        by_task.setdefault(ex.context["task"], []).append(ex)
    prior = {t: model.prior(v, (0.5, 0.9, 1.0)) for t, v in by_task.items()}
    # true L(0.5): extract ~3.5%, qa ~10%, math ~21%; L(0.9): 0.1%, 1%, 5%
    assert prior["extract"][0] < prior["qa"][0] < prior["math"][0]
    assert prior["math"][1] > max(prior["extract"][1], prior["qa"][1])
    assert all(p[2] == 0.0 for p in prior.values())


def test_features_and_off_switch():
    ex = _examples(random.Random(1), 1, "f")[0]
    x = checkpoint_features(ex, 3)
    assert {"score", "pos", "stable", "changes", "ctx:task=" + ex.context["task"]} <= set(x)
    off = RiskModel(enabled=False)
    assert off.learn(ex, evaluate(ex, TAUS)) == 0 and off.prior([ex], TAUS) is None
