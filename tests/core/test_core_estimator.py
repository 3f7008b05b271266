from __future__ import annotations

import pytest

from stopwise.daemon.core.counterfactual import Counterfactual
from stopwise.daemon.core.bounds import cp_upper
from stopwise.daemon.core.estimator import Estimator

TAUS = (0.5, 0.9, 1.0)


def cf(loss0: int, weight: float = 1.0) -> Counterfactual:
    """A complete labelled run (loss at 0.5 only), no pairwise evidence."""
    return Counterfactual(TAUS, (loss0, 0, 0), (0.3, 0.6, 1.0), (1, 1, 1), weight, 0, 1, True,
                          True, (loss0, 0, 0), (-1, -1, -1), (0.0, 0.0, 0.0))


def test_counts_and_ucb_without_decay():
    est = Estimator(TAUS, half_life=1e12, confidence=0.95)
    for i in range(1000):
        est.update("k", cf(1 if i < 10 else 0))
    st = est.stats("k")
    assert st.n_eff == pytest.approx(1000) and st.n_examples == 1000
    # Bonferroni: each of the three bounds is taken at 1 - 0.05 / 3
    assert st.loss[0] == pytest.approx(0.01) and st.ucb[0] == pytest.approx(cp_upper(10, 1000, 1 - 0.05 / 3))
    assert st.ucb[1] == pytest.approx(cp_upper(0, 1000, 1 - 0.05 / 3))
    assert st.loss[2] == 0.0 and st.ucb[2] == 0.0 and st.cost[2] == pytest.approx(1.0)
    assert st.source == ("direct", "direct", "exact") and st.ref == 1.0
    assert st.savings(0.9) == pytest.approx(0.4)


def test_recency_weighting_forgets_old_losses():
    est = Estimator(TAUS, half_life=100, confidence=0.95)
    for _ in range(500):
        est.update("k", cf(1))
    for _ in range(1000):
        est.update("k", cf(0))
    st = est.stats("k")
    # old losses weigh 0.5**10 of a fresh example: the estimate is ~ 0.001
    assert st.loss[0] < 0.002
    assert st.n_evidence == pytest.approx(1 / (1 - 0.5 ** (1 / 100)), rel=0.01)


def test_censored_examples_do_not_enter_estimates():
    est = Estimator(TAUS, half_life=1e12, confidence=0.95)
    none = (None,) * 3
    for _ in range(50):
        est.update("k", Counterfactual(TAUS, none, none, none, 0.0, None, None, False))
    st = est.stats("k")
    assert st.n_examples == 50 and st.n_informative == 0 and st.n_eff == 0.0 and st.ucb[0] == 1.0


def test_large_ipw_weights_shrink_effective_n():
    est = Estimator(TAUS, half_life=1e12, confidence=0.95)
    for _ in range(100):
        est.update("k", cf(0))
    for _ in range(10):
        est.update("k", cf(0, weight=50.0))
    st = est.stats("k")
    assert st.n_eff < 110 / 2   # Kish: (600^2) / (100 + 25000) ~ 14
    assert st.n_evidence == pytest.approx(110)


def test_prior_shrinks_data_poor_contexts():
    est = Estimator(TAUS, half_life=1e12, confidence=0.95, prior_strength=20)
    for _ in range(20):
        est.update("k", cf(0))
    no_prior = est.stats("k")
    risky = est.stats("k", prior=(0.3, 0.0, 0.0))
    assert no_prior.loss[0] == 0.0
    assert risky.loss[0] == pytest.approx(0.15)       # (0 + 20*0.3) / (20 + 20)
    assert risky.ucb[0] > no_prior.ucb[0]
    # with lots of data the prior hardly matters
    for _ in range(5000):
        est.update("k", cf(0))
    assert est.stats("k", prior=(0.3, 0.0, 0.0)).loss[0] < 0.002
