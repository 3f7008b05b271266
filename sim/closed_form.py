"""Worlds whose true loss curve L(tau) is known in closed form, per context
(for the Monte Carlo test of the published guarantee, issue 9 item 3).

One request of a :class:`ClosedContext` ``(a, alpha, p, shape, cut)``:

* the run has 2-4 checkpoints (uniform); checkpoint 0 scores
  ``s ~ Beta(a, 1)`` (CDF ``F(s) = s ** a``; ``a = 1`` is Uniform(0, 1),
  a large ``a`` an overconfident context), every later checkpoint scores
  ``HIGH = 0.9999`` (above every grid tau < 1);
* the full (last) answer is correct with probability ``p``, independently
  of everything else;
* checkpoint 0's answer differs from the full answer with probability
  ``r(s) = alpha * (1 - s) * 1{s < cut}`` (``shape="linear"``) or
  ``alpha * 1{s < cut}`` (``shape="flat"``); every later checkpoint's answer
  IS the full answer.

So for ``tau < 1`` the run stops at checkpoint 0 iff ``s >= tau`` (else at
checkpoint 1, whose answer is the full one); at ``tau = 1`` it never stops
early. With ``f(s) = a s^(a-1)`` and ``c = max(cut, tau)``:

    L(tau) = P(full right AND answer at the tau stop != full answer)
           = p * integral_tau^c r(s) f(s) ds
    linear: p * alpha * [G(c) - G(tau)],  G(x) = x^a - a / (a + 1) * x^(a + 1)
    flat:   p * alpha * [c^a - tau^a]

(linear, ``a = 1``, ``cut = 1``: ``p * alpha * (1 - tau)^2 / 2``), and
``L(1) = 0``; the label-free disagreement is ``D(tau) = L(tau) / p``. A
run's tokens: checkpoint 0 at 20-40, each later checkpoint 20-40 more.

:data:`CONTEXTS` are chosen so that, for the default grid and an EM budget
of 0.01, the hindsight oracle (the lowest grid tau with ``L <= budget`` for
it and every higher tau) lands at three different grid points, each with
its next more aggressive grid tau over the budget:

>>> [oracle_tau(c, DEFAULT_TAUS, 0.01) for c in CONTEXTS]
[0.6, 0.8, 0.93]
>>> [round(true_loss(c, t), 4) for c, t in zip(CONTEXTS, (0.5, 0.75, 0.9))]
[0.0125, 0.0141, 0.011]
>>> round(true_loss(CONTEXTS[1], 0.8), 6), true_loss(CONTEXTS[2], 0.93), true_loss(CONTEXTS[1], 1.0)
(0.009, 0.0, 0.0)
>>> reqs = build_closed_world(seed=1, n=300)
>>> len(reqs), reqs[0].ts, reqs[-1].ts, all(2 <= len(r.checkpoints) <= 4 for r in reqs)
(300, 0.0, 2.99, True)
>>> round(sum(r.feedback.present for r in build_closed_world(seed=1, n=3000)) / 3000, 2)
0.3
>>> any(r.feedback.present for r in build_closed_world(seed=1, n=300, feedback=0.0))
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stopwise.daemon.config import GridConfig
from stopwise.daemon.context import ContextKeyer

from .world import WorldRequest

HIGH = 0.9999
"""The score of every checkpoint after the first (above any grid tau < 1)."""
RATE = 100.0
"""Requests per second of event time."""
FEEDBACK_SHARE = 0.30
FEEDBACK_MEAN_DELAY_S = 45.0
DEFAULT_TAUS: tuple[float, ...] = tuple(GridConfig().taus) + (1.0,)


SHAPES = ("linear", "flat")


@dataclass(frozen=True)
class ClosedContext:
    """``s ~ Beta(a, 1)``; ``P(answer 0 differs | s) = r(s)`` (see the module
    doc for ``shape`` and ``cut``); ``P(full right) = p``; ``task`` names
    the context (key ``task=<task>``); ``weight`` is its traffic share."""

    task: str
    a: float
    alpha: float
    p: float
    shape: str = "linear"
    cut: float = 1.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.a > 0 and 0 <= self.alpha <= 1 and 0 <= self.p <= 1 and 0 <= self.cut <= 1
                and self.weight > 0 and self.shape in SHAPES):
            raise ValueError(f"closed-form context {self.task!r}: need a > 0, alpha, p and cut in [0, 1], "
                             f"weight > 0 and shape in {SHAPES}")

    @property
    def context(self) -> dict[str, str]:
        return {"task": self.task}

    def differs_p(self, s: np.ndarray) -> np.ndarray:
        """``r(s)``, vectorised."""
        base = (1.0 - s) if self.shape == "linear" else np.ones_like(s)
        return self.alpha * base * (s < self.cut)


CONTEXTS: tuple[ClosedContext, ...] = (
    # uniform scores: L = 0.05 (1 - tau)^2, oracle 0.6 (L(0.5) = 0.0125)
    ClosedContext("cf-low", a=1.0, alpha=1 / 9, p=0.9),
    # uniform scores: L = 0.225 (1 - tau)^2, oracle 0.8 (L(0.75) = 0.0141)
    ClosedContext("cf-mid", a=1.0, alpha=0.5, p=0.9),
    # overconfident scores, no risk above 0.93, a cliff below: oracle 0.93 (L(0.9) = 0.011)
    ClosedContext("cf-edge", a=5.0, alpha=0.116, p=0.9, shape="flat", cut=0.93),
)
"""Three contexts, equal traffic, oracle thresholds 0.6 / 0.8 / 0.93 at budget 0.01."""

KEYER = ContextKeyer(("task", "domain"))


def context_key(c: ClosedContext) -> str:
    """The context key of ``c`` under the default dimensions.

    >>> context_key(CONTEXTS[0])
    'task=cf-low'
    """
    return KEYER.key(c.context)


def true_loss(c: ClosedContext, tau: float) -> float:
    """The closed-form L(tau) of ``c`` (see the module doc); 0 at tau >= 1.

    >>> round(true_loss(ClosedContext("x", 1.0, 1.0, 1.0), 0.5), 6)   # (1 - 0.5)^2 / 2
    0.125
    >>> round(true_loss(ClosedContext("y", 2.0, 0.5, 0.8, shape="flat", cut=0.9), 0.5), 6)   # 0.4 (0.81 - 0.25)
    0.224
    """
    if tau >= 1.0:
        return 0.0
    t = max(0.0, float(tau))
    hi = max(c.cut, t)
    a = c.a
    if c.shape == "flat":
        return c.p * c.alpha * (hi ** a - t ** a)

    def g(x: float) -> float:
        return x ** a - a / (a + 1.0) * x ** (a + 1.0)

    return c.p * c.alpha * (g(hi) - g(t))


def oracle_tau(c: ClosedContext, taus: Sequence[float], budget: float) -> float:
    """The lowest tau of ``taus`` whose L, and that of every higher tau, is <= ``budget``."""
    best = 1.0
    for t in sorted(taus, reverse=True):
        if true_loss(c, t) > budget:
            break
        best = t
    return best


def build_closed_world(seed: int, n: int, contexts: Sequence[ClosedContext] = CONTEXTS, *,
                       feedback: float = FEEDBACK_SHARE, mean_delay: float = FEEDBACK_MEAN_DELAY_S,
                       rate: float = RATE) -> list[WorldRequest]:
    """``n`` requests (ts ``i / rate``, contexts drawn by weight) of the
    closed-form world ``seed``: a share ``feedback`` of them gets feedback
    (the gold hash), after an exponential delay of mean ``mean_delay`` s.
    Deterministic in ``seed``."""
    if n <= 0:
        raise ValueError("closed-form world: n must be positive")
    if not 0.0 <= feedback <= 1.0:
        raise ValueError(f"closed-form world: feedback share {feedback!r} is not in [0, 1]")
    rng = np.random.default_rng(seed)
    w = np.array([c.weight for c in contexts], dtype=float)
    ci = rng.choice(len(contexts), size=n, p=w / w.sum())
    a = np.array([c.a for c in contexts])[ci]
    p = np.array([c.p for c in contexts])[ci]
    s = rng.random(n) ** (1.0 / a)                     # Beta(a, 1) by inversion of s ** a
    r = np.zeros(n)
    for j, c in enumerate(contexts):
        r[ci == j] = c.differs_p(s[ci == j])
    differs = rng.random(n) < r
    right = rng.random(n) < p
    n_cps = rng.integers(2, 5, size=n)
    steps = rng.integers(20, 41, size=(n, 4)).cumsum(axis=1)
    present = rng.random(n) < feedback
    delay = rng.exponential(mean_delay, size=n)
    out = []
    validate = WorldRequest.model_validate
    ctx_dicts = [c.context for c in contexts]
    steps_l, s_l, ci_l, k_l = steps.tolist(), s.tolist(), ci.tolist(), n_cps.tolist()
    differs_l, right_l, present_l, delay_l = differs.tolist(), right.tolist(), present.tolist(), delay.tolist()
    for i in range(n):
        final = f"g{i}" if right_l[i] else f"w{i}"
        tok = steps_l[i]
        cps = [(tok[0], s_l[i], f"x{i}" if differs_l[i] else final)]
        cps += [(tok[j], HIGH, final) for j in range(1, k_l[i])]
        out.append(validate({
            "request_id": f"cf{seed}-{i}", "ts": round(i / rate, 6), "context": ctx_dicts[ci_l[i]],
            "checkpoints": cps, "gold_answer_hash": f"g{i}",
            "feedback": {"present": present_l[i], "delay_s": delay_l[i] if present_l[i] else 0.0}}))
    return out
