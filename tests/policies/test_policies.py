from __future__ import annotations

import dataclasses

import pytest

from stopwise.daemon.core.estimator import TauStats
from stopwise.policies import make_policy
from stopwise.policies.ab import ABPolicy, confidence_radius
from stopwise.policies.base import View, ltt_index
from stopwise.sim.traces import THREE_CONTEXTS

from policy_helpers import TAUS, outcomes, view_for

EASY, MIDDLE, RISKY = THREE_CONTEXTS


# ---- reference ---------------------------------------------------------

def test_reference_picks_lowest_tau_certified_for_it_and_all_more_conservative():
    ucb = [0.002, 0.02, 0.003, 0.004, 0.006, 0.008, 0.009, 0.0]   # 0.6 breaks the sequence
    st = TauStats(TAUS, tuple(u / 2 for u in ucb), tuple(ucb), tuple([0.5] * 7 + [1.0]), 5000, 5000, 5000)
    assert TAUS[ltt_index(st, 0.01)] == 0.7
    p = make_policy("reference", leave_band=0.05).decide("*", View("*", st, 0.01), 0.0)
    assert p.threshold == 0.7 and p.est_loss_ucb == pytest.approx(0.003)
    # leaving 1.0 needs room under the budget (the bound grows when complete runs get IPW weights)
    assert make_policy("reference").decide("*", View("*", st, 0.01), 0.0).threshold == 1.0


def test_reference_learns_different_thresholds_for_different_risk():
    pol = make_policy("reference")
    got = {}
    for prof in (EASY, RISKY):
        outs = outcomes(3000, seed=1, profile=prof)
        got[prof.context["task"]] = pol.decide(prof.context["task"], view_for(outs), 0.0).threshold
    assert got["extract"] < got["math"]


def test_reference_integral_tightens_after_realized_losses():
    pol = make_policy("reference")
    view = view_for(outcomes(3000, seed=2, profile=EASY))
    base = pol.decide("k", view, 0.0).threshold
    # explored runs on which the served threshold lost EM
    bad = [o for o in outcomes(4000, seed=5, profile=RISKY, threshold=0.6, explore_rate=1.0)
           if o.served_observation == 1][:20]
    assert len(bad) == 20
    for o in bad:
        pol.learn_one("k", o)
    tighter = pol.decide("k", view, 1.0)
    assert pol.budget_ratio("k") < 0.7
    assert tighter.threshold > base


def test_reference_holds_current_threshold_inside_the_band():
    ucb = [0.5, 0.5, 0.5, 0.0095, 0.0092, 0.006, 0.003, 0.0]
    st = TauStats(TAUS, tuple([0.0] * 8), tuple(ucb), tuple([0.5] * 7 + [1.0]), 5000, 5000, 5000)
    pol = make_policy("reference", band=0.1)
    # from 0.9 it does not jump to 0.8 (0.0095 > 0.9 * budget) ...
    assert pol.decide("*", View("*", st, 0.01, current_threshold=0.9), 0.0).threshold == 0.9
    # ... but already at 0.8 it stays there (still under the budget)
    assert pol.decide("*", View("*", st, 0.01, current_threshold=0.8), 0.0).threshold == 0.8
    # and if the current one is no longer certified it retreats at once
    assert pol.decide("*", View("*", st, 0.009, current_threshold=0.8), 0.0).threshold == 0.95


def test_reference_exploration_rises_with_uncertainty():
    pol = make_policy("reference")
    few = pol.decide("*", view_for(outcomes(300, seed=1, profile=MIDDLE)), 0.0)
    many = pol.decide("*", view_for(outcomes(6000, seed=1, profile=MIDDLE)), 0.0)
    empty = pol.decide("*", view_for([]), 0.0)
    assert few.explore_rate > many.explore_rate
    assert 0.02 <= many.explore_rate <= 0.25 and empty.explore_rate == 0.2


def _served(n: int, loss: int, seed: int = 3):
    """``n`` explored outcomes whose served threshold lost (``loss=1``) or not."""
    prof = RISKY if loss else EASY
    got = [o for o in outcomes(40 * n if loss else 2 * n, seed=seed, profile=prof, threshold=0.6 if loss else 0.99,
                               explore_rate=1.0) if o.served_observation == loss][:n]
    assert len(got) == n
    return got


def test_reference_explores_at_min_rate_when_no_decision_can_change():
    # 0.6 is certified with room to spare and 0.5 is far over budget: monitor only
    taus = (0.5, 0.6, 1.0)
    out_of_reach = TauStats(taus, (0.05, 0.002, 0.0), (0.06, 0.004, 0.0), (0.3, 0.5, 1.0), 5000, 5000, 5000)
    p = make_policy("reference").decide("*", View("*", out_of_reach, 0.01, current_threshold=0.6,
                                                   current_explore_rate=0.02), 0.0)
    assert p.threshold == 0.6 and p.explore_rate == 0.02
    # ... but below 1.0 the rate falls by at most half per decision (IPW weights 1 / rate)
    slow = make_policy("reference").decide("*", View("*", out_of_reach, 0.01, current_threshold=0.6,
                                                      current_explore_rate=0.2), 0.0)
    assert slow.explore_rate == pytest.approx(0.1)
    # 0.5 is plausibly within budget but not yet certified: explore to certify it
    plausible = TauStats(taus, (0.004, 0.002, 0.0), (0.011, 0.004, 0.0), (0.3, 0.5, 1.0), 800, 800, 800)
    q = make_policy("reference").decide("*", View("*", plausible, 0.01, current_threshold=0.6), 0.0)
    assert q.threshold == 0.6 and q.explore_rate > 0.1
    # the current one's certificate is about to lapse: explore to keep it
    lapsing = TauStats(taus, (0.05, 0.006, 0.0), (0.06, 0.0098, 0.0), (0.3, 0.5, 1.0), 800, 800, 800)
    k = make_policy("reference").decide("*", View("*", lapsing, 0.01, current_threshold=0.6), 0.0)
    assert k.threshold == 0.6 and k.explore_rate > 0.2


def test_reference_credit_is_off_by_default_and_loosens_only_up_to_max_credit_when_asked():
    # 0.6's UCB (0.0103) is over the budget: certified only with credit (entry: 0.95 * 1.10%),
    # which the default (the tested guarantee) never grants
    taus = (0.5, 0.6, 1.0)
    st = TauStats(taus, (0.05, 0.005, 0.0), (0.06, 0.0103, 0.0), (0.3, 0.5, 1.0), 3000, 3000, 3000)
    view = View("*", st, 0.01)
    strict = make_policy("reference", leave_band=0.05)
    loose = make_policy("reference", max_credit=0.10, leave_band=0.05)
    for pol in (strict, loose):
        for o in _served(600, 0):
            pol.learn_one("*", o)
        pol.decide("*", view, 0.0)
    assert strict.budget_ratio("*") == 1.0 and strict.decide("*", view, 1.0).threshold == 1.0
    assert loose.budget_ratio("*") == pytest.approx(1.10) and loose.decide("*", view, 1.0).threshold == 0.6


def test_reference_drift_forfeits_credit_steps_back_and_explores():
    taus = (0.5, 0.6, 1.0)
    st = TauStats(taus, (0.004, 0.002, 0.0), (0.006, 0.004, 0.0), (0.3, 0.5, 1.0), 5000, 5000, 5000)
    pol = make_policy("reference", max_credit=0.10)
    for o in _served(600, 0):
        pol.learn_one("k", o)
    assert pol.decide("k", View("k", st, 0.01, current_threshold=0.5), 0.0).threshold == 0.5
    assert pol.budget_ratio("k") > 1.0 and not pol.drifting("k", 0.01, 0.95)
    for o in _served(8, 1):   # 8 losses among the last few served observations: clearly over 1%
        pol.learn_one("k", o)
    assert pol.drifting("k", 0.01, 0.95)
    p = pol.decide("k", View("k", st, 0.01, current_threshold=0.5), 1.0)
    assert pol.budget_ratio("k") <= 1.0
    assert p.threshold == 0.6 and p.explore_rate == 0.25 and p.reason.startswith("drift")


# ---- static, naive, offline ---------------------------------------------

def test_static_is_static():
    pol = make_policy("static", threshold=0.95)
    for o in outcomes(100):
        pol.learn_one("*", o)
    assert pol.decide("*", view_for([]), 0.0).threshold == 0.95


def test_naive_moves_up_after_a_drop_and_down_otherwise():
    pol = make_policy("naive", min_observations=10)
    view = view_for([])
    clean = [o for o in outcomes(400, seed=1, profile=EASY, threshold=0.99, explore_rate=1.0)
             if o.served_observation == 0][:10]
    for o in clean:
        pol.learn_one("*", o)
    assert pol.decide("*", view, 0.0).threshold == 0.99           # one step down from 1.0
    bad = next(o for o in outcomes(2000, seed=2, profile=RISKY, threshold=0.6, explore_rate=1.0)
               if o.served_observation == 1)
    pol.learn_one("*", bad)
    assert pol.decide("*", view, 1.0).threshold == 1.0            # up two steps (capped at 1.0)


def test_offline_calibrates_then_freezes():
    pol = make_policy("offline", n_calibration=2000)
    outs = outcomes(2000, seed=1, profile=EASY)
    view = view_for([])
    for o in outs[:1000]:
        pol.learn_one("*", o)
    assert pol.decide("*", view, 0.0).threshold == 1.0            # still calibrating
    for o in outs[1000:]:
        pol.learn_one("*", o)
    frozen = pol.decide("*", view, 1.0).threshold
    assert frozen < 1.0
    for o in outcomes(3000, seed=2, profile=RISKY):                # drift: ignored once frozen
        pol.learn_one("*", o)
    assert pol.decide("*", view, 2.0).threshold == frozen


def _unlabelled(o):
    return dataclasses.replace(o, example=dataclasses.replace(o.example, em=None, gold_answer_hash=None))


def test_offline_freezes_on_exactly_600_labelled_full_runs_counted_once():
    pol = make_policy("offline")
    assert pol.n_calibration == 600
    view = view_for([])
    full = outcomes(700, seed=3, profile=EASY)                            # served at 1.0: all complete, labelled
    cut = [o for o in outcomes(800, seed=4, profile=EASY, threshold=0.5, explore_rate=0.0)
           if not o.counterfactual.complete][:200]
    assert len(cut) == 200
    for o in cut:                                                          # early-stopped: not full runs
        pol.learn_one("*", o)
    for o in full[:599]:
        pol.learn_one("*", _unlabelled(o))                                 # unlabelled: not counted
        pol.learn_one("*", o)
        pol.learn_one("*", dataclasses.replace(o, followup=True))         # same request again: counted once
    assert pol.counted("*") == 599
    p = pol.decide("*", view, 0.0)
    assert p.threshold == 1.0 and p.explore_rate == view.max_rate and "599/600" in p.reason
    pol.learn_one("*", full[599])
    assert pol.counted("*") == 600
    frozen = pol.decide("*", view, 1.0)
    assert frozen.threshold < 1.0 and frozen.explore_rate == view.min_rate
    # the same 600 runs, fed alone, give the same frozen threshold: nothing else counted
    ref = make_policy("offline")
    for o in full[:600]:
        ref.learn_one("*", o)
    assert ref.decide("*", view, 0.0).threshold == frozen.threshold
    for o in outcomes(3000, seed=2, profile=RISKY):
        pol.learn_one("*", o)
    assert pol.decide("*", view, 2.0) == frozen


def test_offline_freezes_each_context_on_its_own_runs():
    pol = make_policy("offline", n_calibration=50)
    view = view_for([])
    for o in outcomes(50, seed=5, profile=EASY):
        pol.learn_one("a", o)
    for o in outcomes(49, seed=6, profile=EASY):
        pol.learn_one("b", o)
    assert pol.decide("a", view, 0.0).reason.startswith("offline: frozen after 50")
    assert pol.decide("b", view, 0.0).threshold == 1.0
    with pytest.raises(ValueError, match="n_calibration"):
        make_policy("offline", n_calibration=0)


# ---- bandit ----------------------------------------------------------------

def test_bandit_prefers_savings_without_losses_and_avoids_risky_arms():
    easy = make_policy("bandit", seed=1)
    for o in outcomes(3000, seed=1, profile=EASY):
        easy.learn_one("*", o)
    risky = make_policy("bandit", seed=1)
    for o in outcomes(3000, seed=1, profile=RISKY):
        risky.learn_one("*", o)
    view = view_for([])
    t_easy = easy.decide("*", view, 0.0).threshold
    t_risky = risky.decide("*", view, 0.0).threshold
    assert t_easy < t_risky
    assert t_risky >= 0.95


def test_bandit_rejects_unknown_algorithm():
    with pytest.raises(ValueError):
        make_policy("bandit", algorithm="nope")
    assert make_policy("bandit", algorithm="epsilon_greedy").decide("*", view_for([]), 0.0).threshold == 1.0


# ---- ab -------------------------------------------------------------------

def test_ab_splits_by_context_and_detects_the_better_arm():
    pol = ABPolicy(a=make_policy("static", threshold=1.0), b=make_policy("static", threshold=0.8), split=0.5)
    keys = [f"task=t{i}" for i in range(40)]
    arms = {k: pol.arm(k) for k in keys}
    assert set(arms.values()) == {"a", "b"}
    assert all(pol.arm(k) == a for k, a in arms.items())          # stable
    view = view_for([])
    assert {pol.decide(k, view, 0.0).threshold for k in keys} == {1.0, 0.8}
    # served traffic: arm a's contexts saved nothing, arm b's (easy traffic at 0.8) saved tokens
    ka = next(k for k in keys if arms[k] == "a")
    kb = next(k for k in keys if arms[k] == "b")
    for o in outcomes(1500, seed=1, profile=EASY, threshold=1.0, explore_rate=1.0):
        pol.learn_one(ka, o)
    assert pol.comparison()["decided"] is None                    # only one arm observed
    for o in outcomes(1500, seed=2, profile=EASY, threshold=0.8, explore_rate=1.0):
        pol.learn_one(kb, o)
    cmp_ = pol.comparison()
    assert cmp_["b"]["mean"] > cmp_["a"]["mean"] and cmp_["decided"] == "b"


def test_confidence_sequence_shrinks_and_covers():
    assert confidence_radius(0, 1.0, 0.05) == float("inf")
    assert confidence_radius(100, 1.0, 0.05) > confidence_radius(10000, 1.0, 0.05) > 0


# ---- load_aware, ensemble ------------------------------------------------

def test_load_aware_spends_more_under_load_and_less_on_critical_contexts():
    outs = outcomes(4000, seed=1, profile=MIDDLE)
    view = view_for(outs, "task=qa|domain=finance", budget=0.02)
    pol = make_policy("load_aware", critical=("task=qa",), critical_fraction=0.3)
    assert pol.is_critical("task=qa|domain=finance") and not pol.is_critical("task=math")
    idle = make_policy("load_aware").decide("k", dataclasses.replace(view, load=0.0), 0.0).threshold
    busy = make_policy("load_aware").decide("k", dataclasses.replace(view, load=1.0), 0.0).threshold
    crit = pol.decide("task=qa|domain=finance", dataclasses.replace(view, load=1.0), 0.0).threshold
    assert busy <= idle and busy <= crit
    assert busy < crit or busy < idle


def test_ensemble_combinations():
    view = view_for([])
    mk = lambda c: make_policy("ensemble", policies=[{"name": "static", "threshold": 0.9},
                                                     {"name": "static", "threshold": 0.95},
                                                     {"name": "static", "threshold": 0.8}], combine=c)
    assert mk("max").decide("*", view, 0).threshold == 0.95
    assert mk("min").decide("*", view, 0).threshold == 0.8
    assert mk("median").decide("*", view, 0).threshold == 0.9
    with pytest.raises(ValueError):
        mk("mean")
