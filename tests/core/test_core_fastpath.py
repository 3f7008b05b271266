"""The fast paths of the core compute exactly what the plain definitions do.

Each test compares an optimised function with a straightforward reference
written here from the definitions (DESIGN section 1), on many random inputs.
"""

from __future__ import annotations

import random

import pytest

from stopwise.daemon.config import GuardrailsConfig
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.counterfactual import MAX_IPW, Counterfactual, evaluate, stop_indices, with_no_stop
from stopwise.daemon.core.estimator import Estimator
from stopwise.daemon.core.examples import LabelledExample, from_events
from stopwise.daemon.core.guardrails import Guardrails
from stopwise.daemon.core.risk_model import RiskModel
from stopwise.daemon.stoprule import NO_EARLY_STOP, stop_index

from core_helpers import feedback, inference


def reference_evaluate(ex: LabelledExample, taus) -> Counterfactual:
    """One tau at a time, straight from the definitions."""
    cps = ex.checkpoints

    def correct(h):
        if ex.gold_answer_hash is not None:
            return int(h == ex.gold_answer_hash)
        if h == cps[ex.stop_index][2]:
            return ex.em
        return 0 if ex.em == 1 else None

    taus = tuple(taus)
    if not ex.complete:
        ems = tuple(correct(cps[stop_index(cps, t)][2]) if t <= ex.threshold and t < NO_EARLY_STOP else None
                    for t in taus)
        none = (None,) * len(taus)
        return Counterfactual(taus, none, none, ems, 0.0, None, None, False)
    a_full, full = cps[-1][2], cps[-1][0]
    em_full = correct(a_full)
    stops = [stop_index(cps, t) for t in taus]
    cost = tuple(cps[k][0] / full if full else 1.0 for k in stops)
    ems = tuple(correct(cps[k][2]) for k in stops)
    k_s = stop_index(cps, ex.threshold)
    crossed = k_s < len(cps) - 1
    weight = ex.weight * (min(MAX_IPW, 1.0 / ex.propensity) if crossed and ex.explore else 1.0)
    if em_full is None:
        return Counterfactual(taus, (None,) * len(taus), cost, ems, 0.0, None, None, True)
    loss = tuple(int(em_full == 1 and cps[k][2] != a_full) for k in stops)
    served = int(em_full == 1 and cps[k_s][2] != a_full)
    return Counterfactual(taus, loss, cost, ems, weight, served, em_full, True)


def random_example(rng: random.Random, i: int) -> LabelledExample:
    n = rng.randint(1, 9)
    tokens = 0 if rng.random() < 0.05 else rng.randint(1, 5)
    cps = []
    for _ in range(n):
        cps.append((tokens, rng.choice((0.0, 0.5, 0.9, 0.95, 1.0, round(rng.random(), 3))), rng.choice("abc")))
        tokens += rng.randint(1, 20)
    complete = rng.random() < 0.6
    threshold = rng.choice((0.5, 0.9, 0.93, 1.0, round(rng.random(), 2)))
    if not complete:  # censored: checkpoints end at the first crossing of the served threshold
        k = stop_index(cps, threshold)
        cps = cps[:k + 1]
    stop = len(cps) - 1 if complete and rng.random() < 0.7 else rng.randrange(len(cps))
    if not complete:
        stop = len(cps) - 1
    gold = rng.choice((None, None, "a", "b", "z"))
    em = None if gold is not None and rng.random() < 0.5 else rng.choice((0, 1))
    return LabelledExample(f"r{i}", {"task": "qa"}, "task=qa", {}, 0.0, threshold, 0, rng.random() < 0.3,
                           rng.choice((1.0, 0.2, 0.05, 1e-6)), complete, stop, tuple(cps), tokens, em, gold,
                           rng.choice((1.0, 2.0)), 1.0)


@pytest.mark.parametrize("taus", [with_no_stop((0.5, 0.6, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97, 0.99)),
                                  with_no_stop((0.5, 0.9)), (0.9, 0.5, 1.0, 0.7), (1.0,), (0.3, 0.95)])
def test_evaluate_matches_the_definition(taus):
    rng = random.Random(7)
    for i in range(3000):
        ex = random_example(rng, i)
        assert evaluate(ex, taus) == reference_evaluate(ex, taus), ex


def test_stop_indices_match_stop_index_in_any_order():
    rng = random.Random(3)
    for _ in range(2000):
        cps = [(i, round(rng.random(), 2), "a") for i in range(rng.randint(1, 8))]
        taus = [rng.choice((0.0, 0.25, 0.5, 0.99, 1.0, round(rng.random(), 2))) for _ in range(rng.randint(0, 6))]
        assert stop_indices(cps, taus) == [stop_index(cps, t) for t in taus]


def test_update_many_equals_one_update_per_key_bit_for_bit():
    taus = with_no_stop((0.5, 0.9, 0.95))
    rng = random.Random(5)
    fast = Estimator(taus, half_life=50, confidence=0.95)
    slow = {k: [0.0, 0.0, 0.0, [0.0] * 4, [0.0] * 4, 0, 0] for k in ("a", "b", "*")}
    for i in range(500):
        ex = random_example(rng, i)
        cf = evaluate(ex, taus)
        keys = ("a", "*") if i % 3 else ("b", "*")
        fast.update_many(keys, cf)
        d = fast.decay
        for k in keys:  # the per-tau loop of the definition
            c, w, w2, sl, st, n, ni = slow[k]
            n += 1
            if cf.weight > 0:
                ni += 1
                c, w, w2 = c * d + 1.0, w * d + cf.weight, w2 * d * d + cf.weight * cf.weight
                for j, (lo, co) in enumerate(zip(cf.loss, cf.cost)):
                    sl[j] = sl[j] * d + cf.weight * lo
                    st[j] = st[j] * d + cf.weight * co
            slow[k] = [c, w, w2, sl, st, n, ni]
    for k in ("a", "b", "*"):
        acc = fast._acc[k]
        assert [acc.c, acc.w, acc.w2, acc.sl, acc.st, acc.n, acc.ni] == slow[k]


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
