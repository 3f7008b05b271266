from __future__ import annotations

import pytest

from stopwise.daemon.core.counterfactual import evaluate, with_no_stop

from core_helpers import example

CPS = ((10, 0.40, "x"), (20, 0.80, "y"), (30, 0.92, "z"), (40, 0.97, "z"))
TAUS = with_no_stop((0.5, 0.8, 0.9, 0.95))   # (0.5, 0.8, 0.9, 0.95, 1.0)


def test_complete_run_gives_every_tau_exactly():
    cf = evaluate(example(CPS, em=1), TAUS)
    # stops: 0.5 -> idx1 (y), 0.8 -> idx1 (y), 0.9 -> idx2 (z), 0.95 -> idx3, 1.0 -> idx3
    assert cf.loss == (1, 1, 0, 0, 0)
    assert cf.cost == pytest.approx((0.5, 0.5, 0.75, 1.0, 1.0))
    assert cf.weight == 1.0 and cf.em_full == 1 and cf.complete and cf.served_loss == 0


def test_wrong_full_answer_means_no_loss_anywhere():
    cf = evaluate(example(CPS, em=0), TAUS)
    assert cf.loss == (0, 0, 0, 0, 0) and cf.em_full == 0


def test_gold_hash_labels_every_checkpoint():
    cf = evaluate(example(CPS, em=None, gold="y"), TAUS)
    assert cf.em_full == 0 and cf.loss == (0,) * 5
    assert cf.em_at == (1, 1, 0, 0, 0)


def test_explored_run_that_crossed_is_inverse_propensity_weighted():
    cf = evaluate(example(CPS, threshold=0.8, explore=True, propensity=0.1), TAUS)
    assert cf.weight == pytest.approx(10.0)
    assert cf.served_loss == 1            # 0.8 would have delivered "y" != "z"
    # a complete run that never crossed the served threshold is weight 1 even if explored
    cf2 = evaluate(example(CPS, threshold=0.99, explore=True, propensity=0.1), TAUS)
    assert cf2.weight == 1.0 and cf2.served_loss == 0


def test_feedback_weight_is_a_label_trust_not_a_sample_weight():
    # the HT weight is the inverse propensity alone, whatever the feedback weight
    cf = evaluate(example(CPS, threshold=0.8, explore=True, propensity=0.5, weight=2.0), TAUS)
    assert cf.weight == pytest.approx(2.0)
    assert cf.loss == (1, 1, 0, 0, 0) == cf.disagree     # full answer right: Z = L = D
    # a wrong full answer with trust c: Z = D * (1 - c); trust is clipped to [0, 1]
    half = evaluate(example(CPS, em=0, weight=0.25), TAUS)
    assert half.disagree == (1, 1, 0, 0, 0) and half.em_full == 0
    assert half.loss == pytest.approx((0.75, 0.75, 0.0, 0.0, 0.0)) and half.weight == 1.0
    assert evaluate(example(CPS, em=0, weight=5.0), TAUS).loss == (0, 0, 0, 0, 0)
    assert evaluate(example(CPS, em=0, weight=1.0), TAUS).loss == (0, 0, 0, 0, 0)
    assert evaluate(example(CPS, threshold=0.5, em=0, weight=0.25), TAUS).served_loss == pytest.approx(0.75)


def test_censored_run_informs_only_taus_at_or_below_served():
    prefix = CPS[:3]                      # stopped at 0.9 on "z" (score 0.92)
    ex = example(prefix, threshold=0.9, complete=False, em=1)
    cf = evaluate(ex, TAUS)
    assert cf.weight == 0.0 and not cf.informative
    assert cf.loss == (None,) * 5 and cf.cost == (None,) * 5
    # EM of the early answers: delivered "z" is correct (em=1) so "y" is wrong
    assert cf.em_at == (0, 0, 1, None, None)
    assert cf.served_loss is None and cf.em_full is None


def test_censored_run_with_em0_knows_only_the_delivered_answer():
    cf = evaluate(example(CPS[:3], threshold=0.9, complete=False, em=0), TAUS)
    assert cf.em_at == (None, None, 0, None, None)


def test_complete_run_with_unknown_full_em_falls_back_to_disagreement():
    # explored run delivering an early answer (stop_index < last), em=0: EM_full unknown,
    # so the run counts with its full HT weight and Z = D (an upper bound on L)
    from dataclasses import replace
    ex = replace(example(CPS, threshold=0.8, explore=True, propensity=0.2, em=0), stop_index=1)
    cf = evaluate(ex, TAUS)
    assert cf.labelled and cf.em_full is None
    assert cf.weight == pytest.approx(5.0) and cf.loss == (1, 1, 0, 0, 0) == cf.disagree
    assert cf.served_loss == 1 and cf.em_at == (0, 0, None, None, None)
    assert cf.cost[0] == pytest.approx(0.5)


def test_unlabelled_complete_run_gives_disagreement_at_every_tau():
    cf = evaluate(example(CPS, em=None), TAUS)
    assert not cf.labelled and cf.em_full is None and cf.em_at == (None,) * 5
    assert cf.loss == cf.disagree == (1, 1, 0, 0, 0) and cf.weight == 1.0 and cf.served_loss == 0
    # the 0.4 answer "x" is never delivered: ids name the answer at each tau's stop
    assert cf.ids[0] == cf.ids[1] != cf.ids[2] == cf.ids[3] == cf.ids[4] >= 0
    assert cf.pair_w == (1.0,) * 5                 # never crossed 1.0: every stop is seen


def test_pairwise_weights_of_an_explored_run_that_crossed():
    cf = evaluate(example(CPS, threshold=0.8, explore=True, propensity=0.1, em=None), TAUS)
    # served stop is checkpoint 1: stops at or before it are seen on any run, later ones
    # only because the run explored
    assert cf.pair_w == pytest.approx((1.0, 1.0, 10.0, 10.0, 10.0))
    assert cf.ids[0] == cf.ids[1] != cf.ids[2] == cf.ids[3] == cf.ids[4]


def test_censored_run_gives_pairwise_evidence_up_to_its_last_checkpoint():
    cf = evaluate(example(CPS[:3], threshold=0.9, complete=False, em=None), TAUS)
    # stops: 0.5 and 0.8 -> "y" (idx 1), 0.9 -> "z" (idx 2), 0.95 and 1.0 -> not observed
    assert cf.ids[0] == cf.ids[1] != cf.ids[2] and cf.ids[2] >= 0 and cf.ids[3:] == (-1, -1)
    assert cf.pair_w == (1.0, 1.0, 1.0, 0.0, 0.0)
    assert cf.weight == 0.0 and cf.disagree is None and not cf.labelled


def test_tiny_propensity_is_clipped():
    from stopwise.daemon.core.counterfactual import MAX_IPW

    cf = evaluate(example(CPS, threshold=0.8, explore=True, propensity=1e-6), TAUS)
    assert cf.weight == MAX_IPW
