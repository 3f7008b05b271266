"""Outcomes and views from synthetic traffic, for the policy tests."""

from __future__ import annotations

import random

from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.counterfactual import evaluate, with_no_stop
from stopwise.daemon.core.estimator import Estimator
from stopwise.daemon.core.examples import from_events
from stopwise.policies.base import Outcome, View
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

TAUS = with_no_stop((0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99))
KEYER = ContextKeyer(("task", "domain"))


def outcomes(n: int, seed: int = 0, profile=None, threshold: float = 1.0, explore_rate: float = 0.2):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prof = profile or rng.choice(THREE_CONTEXTS)
        req = make_request(rng, prof, f"p{seed}-{i}", float(i))
        inf, fb = to_events(req, threshold, explore_rate)
        ex = from_events(inf, fb, KEYER)
        out.append(Outcome(ex, evaluate(ex, TAUS)))
    return out


def view_for(outs, key: str = "*", budget: float = 0.01, **kw) -> View:
    est = Estimator(TAUS, half_life=1e9, confidence=0.95)
    for o in outs:
        est.update(key, o.counterfactual)
    return View(key, est.stats(key), budget, **kw)
