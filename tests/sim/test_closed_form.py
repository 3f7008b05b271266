"""The closed-form worlds: the formula against numerical integration, and
against a large Monte Carlo sample of the generated requests themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from stopwise.daemon.stoprule import stop_index
from stopwise.sim.closed_form import CONTEXTS, DEFAULT_TAUS, ClosedContext, build_closed_world, true_loss

SHAPED = CONTEXTS + (ClosedContext("u", a=2.5, alpha=1.0, p=0.8, cut=0.8),
                     ClosedContext("v", a=0.7, alpha=0.9, p=1.0, shape="flat"))


@pytest.mark.parametrize("ctx", SHAPED, ids=lambda c: c.task)
def test_closed_form_matches_numerical_integral(ctx: ClosedContext) -> None:
    def integrand(s: float) -> float:
        return ctx.p * float(ctx.differs_p(np.array([s]))[0]) * ctx.a * s ** (ctx.a - 1.0)

    for tau in DEFAULT_TAUS[:-1] + (0.0, 0.3):
        # the integrand jumps at ``cut``: integrate the two pieces separately
        hi = max(tau, ctx.cut)
        want = quad(integrand, tau, hi, limit=200)[0] if hi > tau else 0.0
        assert true_loss(ctx, tau) == pytest.approx(want, rel=1e-7, abs=1e-12), tau
    assert true_loss(ctx, 1.0) == 0.0


def test_closed_form_matches_a_large_sample_of_the_generated_world() -> None:
    # the three test contexts plus two riskier ones (larger L: a sharper check of the generator)
    reqs = build_closed_world(seed=12345, n=40_000, contexts=SHAPED, feedback=0.0)
    taus = DEFAULT_TAUS
    for c in SHAPED:
        mine = [q for q in reqs if q.context["task"] == c.task]
        runs = [q.checkpoints for q in mine]
        n = len(runs)
        assert n > 7_000
        right = np.array([cps[-1][2] == q.gold_answer_hash for cps, q in zip(runs, mine)])
        assert abs(right.mean() - c.p) < 4.0 * math.sqrt(max(c.p * (1 - c.p), 1e-6) / n)
        # D[i, j] = 1{answer at tau_j's stop (the simulator's stop rule) != full answer}
        d = np.array([[cps[stop_index(cps, t)][2] != cps[-1][2] for t in taus] for cps in runs])
        loss = (d & right[:, None]).mean(axis=0)
        for j, tau in enumerate(taus):
            want = true_loss(c, tau)
            se = math.sqrt(max(want * (1 - want), 1e-6) / n)
            assert abs(loss[j] - want) < 4.0 * se, (c.task, tau, loss[j], want)
            # the label-free disagreement is L / p
            assert abs(d[:, j].mean() - want / c.p) < 4.0 * math.sqrt(max(want / c.p, 1e-6) / n)


def test_world_is_seeded_and_its_feedback_follows_the_spec() -> None:
    a, b = build_closed_world(seed=7, n=4000), build_closed_world(seed=7, n=4000)
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    assert [r.checkpoints for r in build_closed_world(seed=8, n=50)] != [r.checkpoints for r in a[:50]]
    # 30% feedback, exponential delays of mean 45 s; the runs do not depend on the feedback share
    delays = np.array([r.feedback.delay_s for r in a if r.feedback.present])
    assert abs(len(delays) / len(a) - 0.3) < 0.03
    assert 40.0 < delays.mean() < 50.0 and abs(np.median(delays) - 45.0 * math.log(2)) < 4.0
    none = build_closed_world(seed=7, n=4000, feedback=0.0)
    assert not any(r.feedback.present for r in none)
    assert [r.checkpoints for r in none] == [r.checkpoints for r in a]
    assert [r.ts for r in a[:3]] == [0.0, 0.01, 0.02]


def test_bad_context_or_world_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="cf-x"):
        ClosedContext("cf-x", a=1.0, alpha=1.5, p=0.9)
    with pytest.raises(ValueError, match="shape"):
        ClosedContext("cf-y", a=1.0, alpha=0.5, p=0.9, shape="cubic")
    with pytest.raises(ValueError, match="feedback share"):
        build_closed_world(seed=1, n=10, feedback=1.5)
