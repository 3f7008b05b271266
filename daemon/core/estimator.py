"""Per-context, recency-weighted estimates of L(tau) and T(tau) with
Clopper-Pearson upper bounds, shrunk toward a prior (the River model's
prediction) for data-poor contexts.

Per context, for every tau of the grid plus 1.0, the estimator keeps
``W = sum d_i w_i``, ``W2 = sum (d_i w_i)^2``, ``S_L = sum d_i w_i loss_i``
and ``S_T = sum d_i w_i cost_i`` over informative examples (weight ``w_i``
from :mod:`.counterfactual`: 1, or 1/propensity for explored runs that
crossed the served threshold; censored runs do not enter). Recency: each new
informative example of a context multiplies that context's sums by
``0.5 ** (1 / half_life)`` (``half_life`` in informative examples), so
``d_i`` halves every ``half_life`` examples.

Bounds: mean ``m = S_L / W``, Kish ``n_eff = W^2 / W2``, ``k_eff = m n_eff``;
with a prior mean ``p0`` (model prediction) and strength ``s``
(``prior_strength`` pseudo-examples): ``k' = k_eff + s p0``,
``n' = n_eff + s``, estimate ``k'/n'`` and one-sided Clopper-Pearson upper
bound at ``confidence`` on ``(k', n')``. The evidence count used by the
``min_evidence`` guardrail is the decayed COUNT of informative examples
(``sum d_i``), not Kish's n_eff: it only grows, so the gate cannot flap
when a few large inverse-propensity weights arrive. Without a prior (model off, or no
prediction yet for that context) ``s = 0``.

>>> est = Estimator(taus=(0.5, 0.9, 1.0), half_life=1e9, confidence=0.95)
>>> from stopwise.daemon.core.counterfactual import Counterfactual
>>> cf = Counterfactual((0.5, 0.9, 1.0), (0, 0, 0), (0.3, 0.6, 1.0), (1, 1, 1), 1.0, 0, 1, True)
>>> for _ in range(300): est.update("*", cf)
>>> st = est.stats("*")
>>> round(st.n_eff), st.loss[0], round(st.ucb[0], 4), round(st.savings(0.5), 2)
(300, 0.0, 0.0099, 0.7)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .bounds import cp_upper, kish
from .counterfactual import Counterfactual


@dataclass(frozen=True, slots=True)
class TauStats:
    """A context's estimates, aligned with ``taus`` (ascending, with 1.0)."""

    taus: tuple[float, ...]
    loss: tuple[float, ...]        # estimate of L(tau) (with the prior, if any)
    ucb: tuple[float, ...]         # Clopper-Pearson upper bound on L(tau)
    cost: tuple[float, ...]        # estimate of T(tau) (1.0 when unknown)
    n_eff: float                   # Kish effective informative samples (no prior)
    n_examples: int                # every example learned (censored included)
    n_informative: int             # informative examples learned
    prior: tuple[float, ...] | None = None
    n_evidence: float = 0.0        # recency-decayed count of informative examples


    def index(self, tau: float) -> int:
        for i, t in enumerate(self.taus):
            if abs(t - tau) < 1e-12:
                return i
        raise KeyError(tau)

    def nearest(self, tau: float) -> int:
        """Index of the most aggressive grid tau that is >= ``tau``."""
        for i, t in enumerate(self.taus):
            if t >= tau - 1e-12:
                return i
        return len(self.taus) - 1

    def savings(self, tau: float) -> float:
        return 1.0 - self.cost[self.nearest(tau)]


class _Acc:
    __slots__ = ("w", "w2", "sl", "st", "n", "ni", "c")

    def __init__(self, k: int) -> None:
        self.c = 0.0
        self.w = 0.0
        self.w2 = 0.0
        self.sl = [0.0] * k
        self.st = [0.0] * k
        self.n = 0
        self.ni = 0

    def __getstate__(self):
        return (self.w, self.w2, self.sl, self.st, self.n, self.ni, self.c)

    def __setstate__(self, s):
        self.w, self.w2, self.sl, self.st, self.n, self.ni, self.c = s


class Estimator:
    """See the module doc. Deterministic and picklable."""

    def __init__(self, taus: Sequence[float], half_life: float, confidence: float, prior_strength: float = 0.0) -> None:
        self.taus = tuple(taus)
        self.reconfigure(half_life, confidence, prior_strength)
        self._acc: dict[str, _Acc] = {}

    def reconfigure(self, half_life: float, confidence: float, prior_strength: float = 0.0) -> None:
        """New recency, confidence and prior settings (the counts so far are kept)."""
        self.half_life = float(half_life)
        self.confidence = float(confidence)
        self.prior_strength = float(prior_strength)
        self.decay = 0.5 ** (1.0 / self.half_life)

    def keys(self) -> list[str]:
        return sorted(self._acc)

    def __contains__(self, key: str) -> bool:
        return key in self._acc

    def touch(self, key: str) -> None:
        if key not in self._acc:
            self._acc[key] = _Acc(len(self.taus))

    def update(self, key: str, cf: Counterfactual) -> None:
        self.update_many((key,), cf)

    def update_many(self, keys: Sequence[str], cf: Counterfactual) -> None:
        """:meth:`update` for each of ``keys`` (a context and its ancestors):
        the weighted per-tau terms are computed once for all of them."""
        accs = self._acc
        informative = cf.weight > 0.0
        if informative:
            d = self.decay
            w = cf.weight
            ww = w * w
            wl = [w * lo for lo in cf.loss]
            wc = [w * co for co in cf.cost]
        for key in keys:
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = _Acc(len(self.taus))
            acc.n += 1
            if not informative:
                continue
            acc.ni += 1
            acc.c = acc.c * d + 1.0
            acc.w = acc.w * d + w
            acc.w2 = acc.w2 * d * d + ww
            sl, st = acc.sl, acc.st
            for i, b in enumerate(wl):
                sl[i] = sl[i] * d + b
            for i, b in enumerate(wc):
                st[i] = st[i] * d + b

    def n_evidence(self, key: str) -> float:
        acc = self._acc.get(key)
        return acc.c if acc else 0.0

    def n_eff(self, key: str) -> float:
        acc = self._acc.get(key)
        return kish(acc.w, acc.w2) if acc else 0.0

    def stats(self, key: str, prior: Sequence[float] | None = None) -> TauStats:
        """Estimates for ``key`` (zeros-with-UCB-1 for an unknown key)."""
        k = len(self.taus)
        acc = self._acc.get(key) or _Acc(k)
        n_eff = kish(acc.w, acc.w2)
        s = self.prior_strength if prior is not None else 0.0
        losses, ucbs, costs = [], [], []
        for i in range(k):
            m = acc.sl[i] / acc.w if acc.w > 0 else 0.0
            p0 = prior[i] if prior is not None else 0.0
            kk = m * n_eff + s * p0
            nn = n_eff + s
            losses.append(kk / nn if nn > 0 else 0.0)
            ucbs.append(cp_upper(kk, nn, self.confidence) if self.taus[i] < 1.0 else 0.0)
            costs.append(acc.st[i] / acc.w if acc.w > 0 else 1.0)
        return TauStats(self.taus, tuple(losses), tuple(ucbs), tuple(costs), n_eff, acc.n, acc.ni,
                        tuple(prior) if prior is not None else None, acc.c)
