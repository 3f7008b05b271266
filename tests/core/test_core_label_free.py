"""Label-free evidence (issue 9 items 1-2): the loss surrogate Z, late labels
refining unlabelled evidence, dedupe of the two halves, certification with no
feedback at all, and the pairwise bound from censored served traffic."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from stopwise.daemon.core.bounds import cp_upper
from stopwise.daemon.core.counterfactual import evaluate, with_no_stop
from stopwise.daemon.core.engine import Controller, Core
from stopwise.daemon.core.examples import LabelledExample
from stopwise.daemon.stoprule import stop_index

from core_helpers import example, inference, random_example, small_cfg

TAUS = with_no_stop((0.5, 0.7, 0.9, 0.93, 0.95, 0.97))


def _accs(ctl: Controller, keys=("task=qa", "*")):
    ctl.estimator.flush()
    return [ctl.estimator._acc[k] for k in keys]


def _same_sums(a, b) -> None:
    assert (a.n, a.ni) == (b.n, b.ni)
    assert [a.c, a.w, a.w2] == pytest.approx([b.c, b.w, b.w2], rel=1e-9, abs=1e-9)
    for name in ("sz", "st", "vw", "vw2"):
        assert list(getattr(a, name)) == pytest.approx(list(getattr(b, name)), rel=1e-9, abs=1e-9), name
    assert a.se.ravel().tolist() == pytest.approx(b.se.ravel().tolist(), rel=1e-9, abs=1e-9)


# -- (a) Z >= L -----------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), truth=st.sampled_from("abcz"),
       labels=st.sampled_from(("none", "em", "gold", "both")), trust=st.floats(0.01, 3.0))
def test_surrogate_bounds_the_true_loss_on_every_run(seed, truth, labels, trust):
    """With truthful feedback (the gold answer is ``truth``), whatever the run,
    the labels given and their trust: L <= Z <= D at every tau and at the
    served threshold; a trusted label that decides the full answer gives Z = L."""
    ex = random_example(random.Random(seed), 0)
    cps = ex.checkpoints
    em = int(cps[ex.stop_index][2] == truth) if labels in ("em", "both") else None
    gold = truth if labels in ("gold", "both") else None
    ex = replace(ex, em=em, gold_answer_hash=gold, weight=trust if labels != "none" else 1.0)
    cf = evaluate(ex, TAUS)
    assert cf.labelled == (labels != "none")
    if not ex.complete:
        assert cf.loss == (None,) * len(TAUS) and cf.weight == 0.0 and cf.served_loss is None
        return
    a_full = cps[-1][2]

    def true_loss(k):
        return int(a_full == truth and cps[k][2] != a_full)

    for t, z, d in zip(TAUS, cf.loss, cf.disagree):
        k = stop_index(cps, t)
        assert d == int(cps[k][2] != a_full)
        assert true_loss(k) <= z <= d
        if trust >= 1.0 and cf.em_full is not None:
            assert z == true_loss(k)
    k_s = stop_index(cps, ex.threshold)
    assert true_loss(k_s) <= cf.served_loss <= int(cps[k_s][2] != a_full)
    assert cf.weight >= 1.0


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_surrogate_bounds_the_loss_its_own_labels_define(seed):
    """Labels as :func:`random_example` draws them (EM, gold, both, none; any
    trust): Z >= L for every EM_full the labels allow (both, when they leave it unknown)."""
    ex = random_example(random.Random(seed), 0)
    cf = evaluate(ex, TAUS)
    if not ex.complete:
        assert cf.disagree is None and cf.loss == (None,) * len(TAUS)
        return
    cps = ex.checkpoints
    a_full = cps[-1][2]
    if ex.gold_answer_hash is not None:
        possible = {int(a_full == ex.gold_answer_hash)}
    elif ex.em is not None and a_full == cps[ex.stop_index][2]:
        possible = {ex.em}
    elif ex.em == 1:
        possible = {0}          # the delivered (early) answer was right: the full one is not
    else:
        possible = {0, 1}       # unlabelled, or an early answer was wrong: unknown
    for t, z in zip(TAUS, cf.loss):
        differs = int(cps[stop_index(cps, t)][2] != a_full)
        assert 0.0 <= z <= differs
        assert all(z >= int(em_full == 1 and differs) for em_full in possible)


# -- (b) refine -------------------------------------------------------------

def _unlabelled(ex: LabelledExample) -> LabelledExample:
    return replace(ex, em=None, gold_answer_hash=None, weight=1.0, followup=False)


@pytest.mark.parametrize("seed", [1, 2])
def test_late_label_gives_the_sums_of_a_label_learned_at_once(seed):
    """Stream A learns some runs unlabelled and their labels later (followups,
    flushes in between, some after hundreds of runs); stream B learns the same
    runs labelled at the same positions. The direct and pairwise sums agree."""
    rng = random.Random(seed)
    cfg = small_cfg(estimator={"half_life": 300.0})
    a, b = Controller(cfg), Controller(cfg)
    runs = [random_example(rng, i, unlabelled=0.2) for i in range(1400)]
    late: dict[int, list[LabelledExample]] = {}
    n_late = 0
    for i, ex in enumerate(runs):
        b.learn(ex, float(i))
        if ex.em is not None or ex.gold_answer_hash is not None:
            if rng.random() < 0.5:   # its label comes later in stream A
                assert a.learn(_unlabelled(ex), float(i))
                late.setdefault(i + rng.choice((0, 1, 5, 50, 700)), []).append(replace(ex, followup=True))
                n_late += 1
            else:
                a.learn(ex, float(i))
        else:
            a.learn(ex, float(i))
        for fu in late.pop(i, []):
            assert a.learn(fu, float(i))
        if rng.random() < 0.02:
            a.estimator.flush()
    for i in sorted(late):
        for fu in late[i]:
            a.learn(fu, 2000.0)
    assert n_late > 300
    for x, y in zip(_accs(a), _accs(b)):
        _same_sums(x, y)
    assert a.unique_examples == b.unique_examples + n_late
    assert a.estimator.stats("task=qa").n_examples == 1400


@pytest.mark.parametrize("when", [
    "buffered",                 # the run is still in the update buffer
    "flushed",                  # the buffer was flushed just before the label
    "flushed, then newer runs",
])
def test_late_label_removes_the_runs_disagreement_at_its_decayed_weight(when):
    cps = ((10, 0.6, "b"), (20, 0.92, "a"), (30, 0.97, "a"))   # D(0.5) = 1 on every run
    ctl = Controller(small_cfg(estimator={"half_life": 10.0}))
    ctl.learn(example(cps, em=None, rid="x"), 0.0)
    for i in range(20):
        if i == 10 and when != "buffered":
            ctl.estimator.flush()
        ctl.learn(example(cps, em=None, rid=f"o{i}"), 0.0)
    if when == "flushed":
        ctl.estimator.flush()
    ctl.learn(replace(example(cps, em=0, rid="x"), followup=True), 1.0)
    sz = _accs(ctl)[0].sz
    d = ctl.estimator.decay
    # full answer wrong, trust 1: x's D = 1 at 0.5 is gone, the 20 later runs keep theirs
    assert sz[0] == pytest.approx(sum(d ** age for age in range(20)))
    assert list(sz[2:]) == [0.0] * (len(sz) - 2)                 # no disagreement there


# -- (c) an evicted run keeps D ----------------------------------------------

def test_followup_of_an_evicted_run_keeps_its_disagreement_and_is_not_counted_twice():
    cps = ((10, 0.6, "b"), (20, 0.97, "a"))        # D(0.5) = 1 on every run
    ctl = Controller(small_cfg(join={"max_entries": 3}, estimator={"half_life": 1e12}))
    for i in range(5):                               # only r2..r4 stay remembered for a label
        assert ctl.learn(example(cps, em=None, rid=f"r{i}"), float(i))
    before = ctl.estimator.stats("task=qa")
    sz0 = _accs(ctl)[0].sz[0]
    assert sz0 == pytest.approx(5.0) and before.n_examples == 5 and before.n_informative == 5
    # r0's full answer is wrong (trusted): Z would be 0, but r0 was evicted: it keeps D
    assert ctl.learn(replace(example(cps, em=0, rid="r0"), followup=True), 6.0)
    after = ctl.estimator.stats("task=qa")
    assert _accs(ctl)[0].sz[0] == sz0 and after.ucb == before.ucb
    assert (after.n_examples, after.n_informative, after.n_eff) == (5, 5, pytest.approx(5.0))
    # r4 is remembered: its label removes its D, and still no example is added
    assert ctl.learn(replace(example(cps, em=0, rid="r4"), followup=True), 7.0)
    st4 = ctl.estimator.stats("task=qa")
    assert _accs(ctl)[0].sz[0] == pytest.approx(4.0) and st4.ucb[0] < before.ucb[0]
    assert (st4.n_examples, st4.n_informative) == (5, 5)
    assert ctl.estimator.stats("*").n_examples == 5


# -- (d) dedupe ---------------------------------------------------------------

def test_dedupe_tells_the_unlabelled_evidence_from_its_label():
    cps = ((10, 0.6, "b"), (20, 0.97, "a"))
    ctl = Controller(small_cfg())
    unlabelled = example(cps, em=None, rid="x")
    assert ctl.learn(unlabelled, 0.0) is True
    assert ctl.learn(unlabelled, 1.0) is False                      # the same evidence again
    followup = replace(example(cps, em=1, rid="x"), followup=True)
    assert ctl.learn(followup, 2.0) is True                         # its label is new
    assert ctl.learn(followup, 3.0) is False                        # ... once
    assert ctl.learn(example(cps, em=1, rid="x"), 4.0) is False     # also when not marked followup
    assert ctl.learn(unlabelled, 5.0) is False
    assert (ctl.duplicates, ctl.unique_examples, ctl.labelled_examples) == (4, 2, 1)
    assert ctl.estimator.stats("task=qa").n_examples == 1


def test_label_before_its_unlabelled_copy_is_not_learned_twice():
    """A replay may deliver the labelled example first, then the unlabelled one."""
    cps = ((10, 0.6, "b"), (20, 0.97, "a"))
    ctl = Controller(small_cfg())
    assert ctl.learn(example(cps, em=1, rid="x"), 0.0) is True
    ctl.learn(example(cps, em=None, rid="x"), 1.0)
    assert ctl.estimator.stats("task=qa").n_examples == 1


# -- (e) certification with no feedback at all ---------------------------------

def test_no_feedback_at_all_certifies_a_stable_context_below_one():
    cfg = small_cfg()
    core = Core(cfg)
    cps = ((10, 0.3, "a"), (20, 0.6, "a"), (30, 0.9, "a"), (40, 0.97, "a"))   # never changes its answer
    thr, n = 1.0, 0
    while thr == 1.0 and n < 6000:
        for _ in range(100):
            core.on_inference(inference(f"r{n}", float(n), cps=cps, context={"task": "qa"}), float(n))
            n += 1
        for d in core.tick(float(n)):
            if d.record.context == "task=qa":
                thr = d.record.threshold
                rec = d.record
    assert thr < 1.0, f"still at 1.0 after {n} unlabelled complete runs"
    ctl = core.controller.owner("task=qa")
    assert ctl.labelled_examples == 0 and core.joiner.stats.joined == 0
    assert rec.est_loss_ucb <= cfg.budget.em_drop
    st_ = ctl.estimator.stats("task=qa", ref=1.0)
    assert st_.source[st_.nearest(thr)] == "direct" and st_.n_informative == n


# -- (f) censored served traffic moves the pair bound --------------------------

def _run(i: int, early: str, complete: bool) -> LabelledExample:
    cps = ((10, 0.6, early), (20, 0.92, "a"), (30, 0.97, "a"))
    if not complete:   # served at 0.9: stops at 0.92 (an exploration run goes on)
        cps = cps[:2]
    return LabelledExample(f"r{i}", {"task": "qa"}, "task=qa", {}, 0.0, 0.9, 1, complete, 0.05 if complete else 0.95,
                           complete, len(cps) - 1, cps, 30, None, None, 1.0, 0.0)


def test_censored_served_traffic_alone_certifies_the_move_below_the_served_threshold():
    ctl = Controller(small_cfg(grid={"taus": [0.5, 0.7, 0.9, 0.95]},
                               estimator={"prior_strength": 0.0, "half_life": 1e12}))
    i05 = ctl.taus.index(0.5)
    conf = 1.0 - 0.05 / 3
    for i in range(40):                     # few complete (explored) runs: 2 disagree at 0.5
        ctl.learn(_run(i, "b" if i < 2 else "a", complete=True), 0.0)
    few = ctl.estimator.stats("task=qa", ref=0.9)
    assert few.source[i05] == "direct" and few.ucb[i05] == pytest.approx(cp_upper(2, 40, conf))
    for i in range(40, 5040):               # plentiful served traffic, cut short at 0.9, no labels
        ctl.learn(_run(i, "b" if i % 100 == 0 else "a", complete=False), 0.0)
    many = ctl.estimator.stats("task=qa", ref=0.9)
    assert many.n_informative == 40 and many.n_examples == 5040 and many.n_eff == pytest.approx(40)
    assert many.source[i05] == "pair" and many.ref == 0.9
    # U_pair(0.5, 0.9) + U_dir(0.9): 52 disagreements among the 5040 runs seeing 0.9's stop
    assert many.n_pair == pytest.approx(5040)
    assert many.ucb[i05] == pytest.approx(cp_upper(52, 5040, conf) + cp_upper(0, 40, conf))
    assert many.ucb[i05] < few.ucb[i05]
    assert many.ucb[ctl.taus.index(0.9)] == pytest.approx(cp_upper(0, 40, conf))   # r itself: direct
    # the censored runs say nothing about 1.0: relative to it, 0.5 stays direct
    assert ctl.estimator.stats("task=qa", ref=1.0).source[i05] == "direct"


def test_a_label_pending_across_a_grid_change_does_not_touch_the_new_estimates():
    bad = ((10, 0.6, "b"), (20, 0.97, "a"))     # D(0.5) = 1
    good = ((10, 0.6, "a"), (20, 0.97, "a"))    # D = 0
    ctl = Controller(small_cfg(estimator={"half_life": 1e12}))
    ctl.learn(example(bad, em=None, rid="x"), 0.0)                       # waits for its label
    ctl.reconfigure(small_cfg(estimator={"half_life": 1e12}, grid={"taus": [0.5, 0.9]}))   # estimates restart
    for i in range(5):
        ctl.learn(example(good, em=None, rid=f"g{i}"), 1.0)
    ctl.learn(replace(example(bad, em=0, rid="x"), followup=True), 2.0)   # x is not in the new sums
    assert list(_accs(ctl)[0].sz) == [0.0, 0.0, 0.0]
    assert min(ctl.estimator.stats("task=qa").loss) >= 0.0
