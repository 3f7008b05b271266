"""The fast paths of the core compute exactly what the plain definitions do.

Each test compares an optimised function with a straightforward reference
written here from the definitions (DESIGN section 1), on many random inputs.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from stopwise.daemon.config import GuardrailsConfig
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.bounds import cp_upper
from stopwise.daemon.core.counterfactual import MAX_IPW, Counterfactual, evaluate, stop_indices, with_no_stop
from stopwise.daemon.core.estimator import Estimator
from stopwise.daemon.core.examples import LabelledExample, from_events
from stopwise.daemon.core.guardrails import Guardrails
from stopwise.daemon.core.risk_model import RiskModel
from stopwise.daemon.stoprule import NO_EARLY_STOP, stop_index

from core_helpers import feedback, inference, random_example


def reference_evaluate(ex: LabelledExample, taus) -> Counterfactual:
    """One tau at a time, straight from the definitions (counterfactual
    module doc). ``ids`` holds the ANSWER at each tau's stop (None: not
    observed); compare with :func:`same_evaluation`, which only asks that
    equal ids mean equal answers."""
    cps = ex.checkpoints
    labelled = ex.em is not None or ex.gold_answer_hash is not None

    def correct(h):
        if ex.gold_answer_hash is not None:
            return int(h == ex.gold_answer_hash)
        if ex.em is None:
            return None
        if h == cps[ex.stop_index][2]:
            return ex.em
        return 0 if ex.em == 1 else None

    taus = tuple(taus)
    none = (None,) * len(taus)
    if not ex.complete:
        # a tau's stop is observed iff a checkpoint of the prefix reaches tau (1.0 never stops early)
        stops = [next((k for k, cp in enumerate(cps) if cp[1] >= t), None) if t < NO_EARLY_STOP else None
                 for t in taus]
        answers = tuple(None if k is None else cps[k][2] for k in stops)
        ems = tuple(None if k is None else correct(cps[k][2]) for k in stops)
        pair_w = tuple(0.0 if k is None else 1.0 for k in stops)
        return Counterfactual(taus, none, none, ems, 0.0, None, None, False, labelled, None, answers, pair_w)
    a_full, full = cps[-1][2], cps[-1][0]
    em_full = correct(a_full)
    trust = min(1.0, max(0.0, ex.weight))
    k_s = stop_index(cps, ex.threshold)
    crossed = k_s < len(cps) - 1
    ipw = min(MAX_IPW, 1.0 / ex.propensity) if crossed and ex.explore else 1.0

    def surrogate(k):
        d = int(cps[k][2] != a_full)
        if em_full is None:          # no label, or the label does not say whether a_full is right
            return d
        l = int(em_full == 1 and d)  # the loss itself
        return d - trust * (d - l)

    stops = [stop_index(cps, t) for t in taus]
    loss = tuple(surrogate(k) for k in stops)
    cost = tuple(cps[k][0] / full if full else 1.0 for k in stops)
    ems = tuple(correct(cps[k][2]) for k in stops)
    disagree = tuple(int(cps[k][2] != a_full) for k in stops)
    answers = tuple(cps[k][2] for k in stops)
    pair_w = tuple(1.0 if k <= k_s else ipw for k in stops)
    return Counterfactual(taus, loss, cost, ems, ipw, surrogate(k_s), em_full, True, labelled, disagree,
                          answers, pair_w)


def _pattern(ids) -> tuple[int, ...]:
    """Which positions share an id (-1 where not observed: -1 or None)."""
    seen = [i for i in ids if i is not None and i != -1]
    return tuple(-1 if i is None or i == -1 else seen.index(i) for i in ids)


def same_evaluation(got: Counterfactual, want: Counterfactual) -> bool:
    return (replace(got, ids=_pattern(got.ids)) == replace(want, ids=_pattern(want.ids))
            and len(got.ids) == len(want.ids))


@pytest.mark.parametrize("taus", [with_no_stop((0.5, 0.6, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97, 0.99)),
                                  with_no_stop((0.5, 0.9)), with_no_stop((0.0, 0.3, 0.95)), (1.0,), (0.3, 0.95)])
def test_evaluate_matches_the_definition(taus):
    rng = random.Random(7)
    kinds = set()
    for i in range(3000):
        ex = random_example(rng, i)
        got, want = evaluate(ex, taus), reference_evaluate(ex, taus)
        assert same_evaluation(got, want), (ex, got, want)
        kinds.add((ex.complete, got.labelled, got.em_full))
    # every kind of run was met: complete or not, labelled or not, full answer right/wrong/unknown
    assert {(True, True, 1), (True, True, 0), (True, True, None), (True, False, None),
            (False, True, None), (False, False, None)} <= kinds


@pytest.mark.parametrize("taus", [(0.9, 0.5, 1.0), (1.0, 0.5), (0.5, 1.0, 0.9)])
def test_evaluate_refuses_a_grid_that_does_not_ascend_to_one(taus):
    ex = random_example(random.Random(1), 0)
    with pytest.raises(ValueError, match="ascend"):
        evaluate(ex, taus)


def test_stop_indices_match_stop_index_in_any_order():
    rng = random.Random(3)
    for _ in range(2000):
        cps = [(i, round(rng.random(), 2), "a") for i in range(rng.randint(1, 8))]
        taus = [rng.choice((0.0, 0.25, 0.5, 0.99, 1.0, round(rng.random(), 2))) for _ in range(rng.randint(0, 6))]
        assert stop_indices(cps, taus) == [stop_index(cps, t) for t in taus]


class SlowSums:
    """One context's sums of the estimator module doc, one example and one
    tau at a time: every example decays every sum, then adds its terms."""

    def __init__(self, k: int) -> None:
        self.k, self.n, self.ni, self.c, self.w, self.w2 = k, 0, 0, 0.0, 0.0, 0.0
        self.sz, self.st, self.vw, self.vw2 = [0.0] * k, [0.0] * k, [0.0] * k, [0.0] * k
        self.se = [[0.0] * k for _ in range(k)]

    def add(self, cf: Counterfactual, d: float) -> int:
        k = self.k
        self.n += 1
        self.ni += int(cf.complete)
        self.c = self.c * d + 1.0
        self.w, self.w2 = self.w * d, self.w2 * d * d
        for j in range(k):
            self.sz[j] *= d
            self.st[j] *= d
            self.vw[j] *= d
            self.vw2[j] *= d * d
            for i in range(k):
                self.se[i][j] *= d
        if cf.weight > 0:                       # direct: complete runs only
            self.w += cf.weight
            self.w2 += cf.weight * cf.weight
            for j in range(k):
                self.sz[j] += cf.weight * cf.loss[j]
                self.st[j] += cf.weight * cf.cost[j]
        ids = cf.ids or (-1,) * k
        pw = cf.pair_w or (0.0,) * k
        for j in range(k):                      # pairwise: every run
            self.vw[j] += pw[j]
            self.vw2[j] += pw[j] * pw[j]
            for i in range(j):
                self.se[i][j] += pw[j] * (ids[i] != ids[j])
        return self.n

    def refine(self, stamp: int, weight: float, delta, d: float) -> None:
        for j in range(self.k):
            self.sz[j] += weight * delta[j] * d ** (self.n - stamp)

    def check(self, acc) -> None:
        k = self.k
        assert (acc.n, acc.ni) == (self.n, self.ni)
        assert [acc.c, acc.w, acc.w2] == pytest.approx([self.c, self.w, self.w2], rel=1e-9, abs=1e-9)
        for name in ("sz", "st", "vw", "vw2"):
            assert list(getattr(acc, name)) == pytest.approx(getattr(self, name), rel=1e-9, abs=1e-9), name
        upper = [(i, j) for j in range(k) for i in range(j)]
        assert [acc.se[i, j] for i, j in upper] == pytest.approx([self.se[i][j] for i, j in upper],
                                                                 rel=1e-9, abs=1e-9)


def test_update_many_equals_the_per_example_per_tau_sums():
    taus = with_no_stop((0.5, 0.9, 0.95))
    rng = random.Random(5)
    fast = Estimator(taus, half_life=50, confidence=0.95)
    slow = {k: SlowSums(len(taus)) for k in ("a", "b", "*")}
    for i in range(1500):                        # '*' passes FLUSH_AT: flushes on its own
        cf = evaluate(random_example(rng, i), taus)
        keys = ("a", "*") if i % 3 else ("b", "*")
        stamps = fast.update_many(keys, cf)
        assert stamps == tuple(slow[k].add(cf, fast.decay) for k in keys)   # the clock stamps
        if rng.random() < 0.01:
            fast.flush()                         # and explicit flushes at random points
    fast.flush()
    for k in ("a", "b", "*"):
        slow[k].check(fast._acc[k])


def reference_stats(s: SlowSums, taus, confidence: float, ref: float, prior=None, strength: float = 0.0):
    """(loss, ucb, source) per tau from the bound definitions of the estimator module doc."""
    k = len(taus)
    conf = 1.0 - (1.0 - confidence) / 3.0
    r = next(i for i, t in enumerate(taus) if t >= ref - 1e-12)
    n_eff = s.w * s.w / s.w2 if s.w2 > 0 else 0.0
    strength = strength if prior is not None else 0.0

    def direct(i):
        if taus[i] == NO_EARLY_STOP:
            return 0.0, 0.0
        kk = (s.sz[i] / s.w if s.w > 0 else 0.0) * n_eff + strength * (prior[i] if prior else 0.0)
        nn = n_eff + strength
        return (kk / nn if nn > 0 else 0.0), cp_upper(kk, nn, conf)

    out = []
    for i in range(k):
        mean_d, u_d = direct(i)
        if i == k - 1:
            out.append((mean_d, u_d, "exact", None))
            continue
        lo, hi = min(i, r), max(i, r)
        vw, vw2 = s.vw[hi], s.vw2[hi]
        n_pair = vw * vw / vw2 if vw2 > 0 else 0.0
        m_pair = s.se[lo][hi] / vw if vw > 0 else 0.0
        u_pair = (cp_upper(m_pair * n_pair, n_pair, conf) if n_pair > 0 else 1.0) + direct(r)[1]
        if i != r and u_pair < u_d:
            out.append((m_pair + direct(r)[0], min(u_pair, 1.0), "pair", u_d - u_pair))
        else:
            out.append((mean_d, min(u_d, 1.0), "direct", None if i == r else u_d - u_pair))
    return out


def served_example(rng: random.Random, i: int) -> LabelledExample:
    """A run served at 0.9 whose answers mostly settle early: cut short at
    0.9 unless it explores (5%, then complete), often unlabelled."""
    cps = ((10, 0.6, "b" if rng.random() < 0.03 else "a"), (20, 0.92, "a"),
           (30, 0.97, "c" if rng.random() < 0.02 else "a"))
    explore = rng.random() < 0.05
    em = rng.choice((None, None, 0, 1))
    cps = cps if explore else cps[:2]
    return LabelledExample(f"s{i}", {"task": "qa"}, "task=qa", {}, 0.0, 0.9, 0, explore, 0.05 if explore else 0.95,
                           explore, len(cps) - 1, cps, 30, em, None, 1.0, 1.0)


def test_stats_match_the_bound_definitions():
    taus = with_no_stop((0.5, 0.7, 0.9, 0.95))
    rng = random.Random(11)
    sources = set()
    for trial in range(40):
        est = Estimator(taus, half_life=rng.choice((30, 300, 1e9)), confidence=rng.choice((0.9, 0.95)),
                        prior_strength=rng.choice((0.0, 20.0)))
        slow = SlowSums(len(taus))
        served = trial % 2 == 1
        for i in range(rng.randint(0, 600)):
            ex = served_example(rng, i) if served and rng.random() < 0.9 else random_example(rng, i)
            cf = evaluate(ex, taus)
            est.update("k", cf)
            slow.add(cf, est.decay)
        prior = rng.choice((None, (0.2, 0.1, 0.05, 0.01, 0.0)))
        ref = rng.choice(taus + (0.8,))
        st = est.stats("k", prior, ref)
        want = reference_stats(slow, taus, est.confidence, ref, prior, est.prior_strength)
        assert st.ref == next(t for t in taus if t >= ref)
        assert list(st.ucb) == pytest.approx([w[1] for w in want], rel=1e-7, abs=1e-9)
        for got_src, got_loss, (loss, _, src, margin) in zip(st.source, st.loss, want):
            if margin is not None and abs(margin) < 1e-9:
                continue                       # a tie: either term is the same bound
            assert got_src == src and got_loss == pytest.approx(loss, rel=1e-7, abs=1e-9)
            sources.add(src)
    assert sources == {"direct", "pair", "exact"}


def test_breaker_sums_equal_the_plain_sums():
    g = Guardrails(GuardrailsConfig(breaker_window=50))
    rng = random.Random(2)
    outcomes = [(rng.random() < 0.1, rng.choice((1.0, 5.0, 20.0))) for _ in range(80)]
    for loss, w in outcomes:
        g.observe("k", int(loss), w)
    window = [(int(a), b) for a, b in outcomes[-50:]]
    w = sum(x[1] for x in window)
    w2 = sum(x[1] * x[1] for x in window)
    mean = sum(x[0] * x[1] for x in window) / w
    assert g.realized("k") == (mean, w * w / w2, 50)
    assert g.realized("nobody") == (0.0, 0.0, 0)


def test_from_events_copies_checkpoints_of_any_shape():
    keyer = ContextKeyer(("task",))
    inf = inference(cps=((10, 0.5, "a"), (20, 0.9, "b")))          # validated: tuples
    raw = inf.model_copy(update={"checkpoints": [[10, 0.5, "a"], [20, 0.9, "b"]]})   # lists
    a, b = from_events(inf, feedback(), keyer), from_events(raw, feedback(), keyer)
    assert a == b and a.checkpoints == ((10, 0.5, "a"), (20, 0.9, "b"))
    plain = LabelledExample("r1", {"task": "qa"}, "task=qa", {}, 0.0, 1.0, 0, False, 1.0, True, 1,
                            ((10, 0.5, "a"), (20, 0.9, "b")), 20, 1, None, 1.0, 1.0)
    assert a == plain and repr(a) == repr(plain)          # the fast constructor builds the same object
    with pytest.raises(AttributeError):
        a.em = 0                                          # and it stays frozen
    assert all(type(cp) is tuple for cp in b.checkpoints)
    assert a.context_key == "task=qa" and from_events(inference(context={"task": "x|y"}), feedback(), keyer).context_key == "task=x%7Cy"


def test_model_learns_data_poor_contexts_in_full_and_subsamples_the_rest():
    taus = with_no_stop((0.5, 0.9))
    ex = LabelledExample("r", {"task": "qa"}, "task=qa", {}, 0.0, 1.0, 0, False, 1.0, True, 2,
                         ((10, 0.5, "x"), (20, 0.9, "y"), (30, 0.95, "y")), 30, 1, None, 1.0, 1.0)
    cf = evaluate(ex, taus)
    m = RiskModel(seed=1, warmup=100, sample_rate=0.2, per_example=2)
    learned = [m.learn(ex, cf, "hot") for _ in range(1100)]
    assert learned[:100] == [2] * 100                      # warm-up: every example
    share = sum(1 for n in learned[100:] if n) / 1000
    assert 0.14 < share < 0.26                             # then about sample_rate of them
    assert [m.learn(ex, cf, "cold") for _ in range(100)] == [2] * 100   # a new context: in full again
    again = RiskModel(seed=1, warmup=100, sample_rate=0.2, per_example=2)
    assert [again.learn(ex, cf, "hot") for _ in range(1100)] == learned  # seeded: deterministic
