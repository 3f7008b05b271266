"""The reference policy: Learn-then-Test + adaptive-conformal integral
correction + uncertainty-driven exploration.

1. Per context, the lowest tau whose Clopper-Pearson UCB on L(tau) stays
   under the effective budget for it and every more conservative tau
   (:func:`~.base.ltt_index`).
2. Integral correction (adaptive conformal inference): on each exploration
   run (a uniform random sample of served traffic) the loss ``l`` the served
   threshold caused is observed and the budget ratio ``r`` (effective
   budget = ``r * budget``) moves by ``gain * step_scale * (budget - l)``
   (ACI's update; with the defaults one realized loss tightens the budget
   by 2.5%, violation-free traffic loosens it back slowly, and the long-run
   realized loss rate on served traffic is pushed to the budget or below). ``r`` is clipped to ``[0, 1 + max_credit]``; with the
   default ``max_credit = 0`` the correction only ever tightens (the UCB is
   already conservative, and the guarantee is "within budget").
3. Hysteresis band: a tau more aggressive than the current one is taken
   only if its UCB is under ``(1 - band)`` times the effective budget; the
   current one is kept while its UCB stays under the budget; if it no
   longer does, the policy retreats at once to the LTT choice. (With a
   flat risk curve the UCBs of many taus sit near the budget, and without
   the band the choice would jump across the grid on every tick.)
4. Exploration rate from the width of the bound at the next more
   aggressive tau (:func:`~.base.uncertainty_rate`).

>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View
>>> st = TauStats((0.5, 0.9, 1.0), (0.2, 0.001, 0.0), (0.3, 0.004, 0.0), (0.4, 0.7, 1.0), 2000, 2000, 2000)
>>> p = ReferencePolicy()
>>> p.decide("*", View("*", st, budget=0.01), now=0.0).threshold
0.9
"""

from __future__ import annotations

from .base import Outcome, Policy, Proposal, View, estimates, ltt_index, uncertainty_rate


class ReferencePolicy(Policy):
    name = "reference"

    def __init__(self, integral_gain: float | None = None, step_scale: float = 0.05, max_credit: float = 0.0,
                 band: float = 0.1) -> None:
        self.integral_gain = integral_gain
        self.band = band
        self.step_scale = step_scale
        self.max_credit = max_credit
        self._pending: dict[str, list[int]] = {}   # key -> [observations, losses] since last decide
        self._ratio: dict[str, float] = {}

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        obs = outcome.served_observation
        if obs is None:
            return
        acc = self._pending.setdefault(context_key, [0, 0])
        acc[0] += 1
        acc[1] += obs

    def budget_ratio(self, context_key: str) -> float:
        return self._ratio.get(context_key, 1.0)

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        gain = view.integral_gain if self.integral_gain is None else self.integral_gain
        r = self._ratio.get(context_key, 1.0)
        n_obs, n_loss = self._pending.pop(context_key, (0, 0))
        if n_obs:
            r += gain * self.step_scale * (n_obs * view.budget - n_loss)
            r = min(1.0 + self.max_credit, max(0.0, r))
            self._ratio[context_key] = r
        budget = view.budget * r
        idx = ltt_index(view.stats, budget)
        strict = ltt_index(view.stats, budget * (1.0 - self.band))
        cur = view.stats.nearest(view.current_threshold)
        if idx <= cur:  # the current threshold is still certified: keep it unless clearly beaten
            idx = min(cur, strict)
        tau = view.taus[idx]
        rate = uncertainty_rate(view, idx)
        reason = f"ltt: ucb {view.stats.ucb[idx]:.4f} <= budget {budget:.4f} (ratio {r:.2f})"
        return Proposal(tau, rate, reason, **estimates(view, idx))
