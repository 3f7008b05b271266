"""The reference policy: Learn-then-Test + adaptive-conformal integral
correction + value-of-information exploration.

1. Per context, the lowest tau whose Clopper-Pearson UCB on L(tau) stays
   under the effective budget for it and every more conservative tau
   (:func:`~.base.ltt_index`).
2. Integral correction (adaptive conformal inference): on each exploration
   run (a uniform random sample of served traffic) the loss ``l`` the served
   threshold caused is observed and the budget ratio ``r`` (effective
   budget = ``r * budget``) moves by ``gain * step_scale * (budget - l)``
   (ACI's update; with the defaults one realized loss tightens the budget
   by 2.5%, violation-free traffic loosens it slowly, and the long-run
   realized loss rate on served traffic is pushed to the budget or below).
   ``r`` is clipped to ``[0, 1 + max_credit]``.

   STATISTICAL TRADE-OFF (opt-in ``max_credit > 0``; the default 0 keeps
   the tested guarantee of docs/control.md, the correction then only tightens): while realized
   loss on served traffic stays under the budget, ``r`` may exceed 1, so a
   tau is served when its 95% Clopper-Pearson UCB is under up to
   ``1.10 * budget`` (entry: ``(1 - band) * 1.10 * budget``). The
   per-context certificate is then "UCB <= 1.1 x budget at 95%, granted
   only while the realized drop on served traffic is under budget", and
   the budget itself is kept as ACI's long-run average on served traffic
   (DESIGN section 5). The credit is forfeited at once (``r`` reset to 1)
   when the recent realized loss is over the budget with 95% confidence
   (:meth:`ReferencePolicy.drifting`). ``max_credit = 0`` restores the
   strict per-context 95% certificate (the correction only tightens).
   A drift detected that way also steps the threshold back at least one
   grid step per decision and explores at ``max_rate``.
3. Hysteresis band: a tau more aggressive than the current one is taken
   only if its UCB is under ``(1 - band)`` times the effective budget; the
   current one is kept while its UCB stays under the budget; if it no
   longer does, the policy retreats at once to the LTT choice. Leaving 1.0
   uses ``leave_band`` (default 0.2) instead: served at 1.0 every run is
   complete with weight 1; below it, complete runs come from exploration
   with inverse-propensity weights, and Kish's effective size drops (the
   bound that justified the move grows by ~20%), which without the wider
   band makes a new context flip between 1.0 and the lower tau. (With a
   flat risk curve the UCBs of many taus sit near the budget, and without
   the band the choice would jump across the grid on every tick.)
4. Exploration rate (:func:`voi_rate`): exploration costs the tokens the
   served threshold would have saved, so it is spent only where it can
   change a decision -- (a) to certify the next more aggressive tau while
   its estimate is under the entry target and it would save more, in
   proportion to the width of its bound; (b) to keep the current tau
   certified once its UCB climbs past ``keep_from`` of the budget; (c) at
   ``max_rate`` while a drift is detected. Elsewhere the rate is
   ``min_rate`` (monitoring). Mind the estimator: explored runs carry
   inverse-propensity weights, so a context's effective sample grows only
   about as fast as its explored runs, and a rate that drops sharply
   (weights ``1 / rate`` jump) shrinks Kish's n_eff; ``keep`` is the
   feedback that stops this from costing a certified threshold.
   Below 1.0 the rate falls by at most half per decision (complete runs
   carry weight ``1 / rate``; a sharp drop would shrink Kish's n_eff).
   ``rate_rule="uncertainty"`` restores the previous rule
   (:func:`~.base.uncertainty_rate`).

Parameters: ``integral_gain`` (None: ``policy.integral_gain``),
``step_scale``, ``max_credit``, ``band`` (default 0.05), ``rate_rule``
(``voi`` | ``uncertainty``), ``drift_half_life`` (explored observations;
the drift detector's memory), ``keep_from``, ``reach`` (see
:func:`voi_rate`).

>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View
>>> st = TauStats((0.5, 0.9, 1.0), (0.2, 0.001, 0.0), (0.3, 0.004, 0.0), (0.4, 0.7, 1.0), 2000, 2000, 2000)
>>> p = ReferencePolicy()
>>> d = p.decide("*", View("*", st, budget=0.01, current_explore_rate=0.02), now=0.0)
>>> d.threshold, d.explore_rate   # 0.5 is far out of budget: nothing to learn, monitor only
(0.9, 0.02)
"""

from __future__ import annotations

from functools import cached_property

from stopwise.daemon.core.bounds import cp_lower

from .base import Outcome, Policy, Proposal, View, estimates, ltt_index, uncertainty_rate


def voi_rate(view: View, idx: int, budget: float, band: float, drift: bool = False, keep_from: float = 0.6,
             reach: float = 0.0) -> float:
    """Exploration rate in ``[min_rate, max_rate]`` for serving ``taus[idx]``
    under the effective ``budget``: ``min_rate + (max_rate - min_rate) * f``
    with ``f`` the largest of

    * certify: ``width / budget`` (``width`` = UCB - estimate) at the next
      more aggressive tau ``j`` (the one the policy tries to certify), but
      only when ``j`` is within reach -- its estimate is under the entry
      target ``(1 - band) * budget`` by at least ``reach * width`` (``reach
      = 0``: under it at all; ``reach = 0.5``: about four times the current
      sample would certify it) -- and it would save at least 5% more tokens
      than ``idx``; otherwise 0 (more data would not change the decision);
    * keep: how far the current tau's UCB has climbed from ``keep_from *
      budget`` toward the budget (0 below, 1 at the budget), so that the
      current certificate is refreshed before it lapses;
    * drift: 1 while a drift is detected (realized loss on served traffic
      clearly over budget, see :meth:`ReferencePolicy.drifting`): look
      harder, the estimates are stale.

    ``initial_rate`` before any informative data.

    >>> from stopwise.daemon.core.estimator import TauStats
    >>> st = TauStats((0.9, 0.95, 1.0), (0.006, 0.002, 0.0), (0.0095, 0.004, 0.0), (0.5, 0.7, 1.0), 2000, 2000, 2000)
    >>> v = View("*", st, budget=0.01)
    >>> round(voi_rate(v, 1, 0.01, 0.1), 4)   # 0.9 is not certified yet (UCB 0.0095 > 0.009)
    0.1005
    >>> out = TauStats((0.9, 0.95, 1.0), (0.03, 0.002, 0.0), (0.04, 0.004, 0.0), (0.5, 0.7, 1.0), 2000, 2000, 2000)
    >>> voi_rate(View("*", out, budget=0.01), 1, 0.01, 0.1)   # 0.9 is out of reach; 0.95 is safe: monitor
    0.02
    >>> round(voi_rate(v, 1, 0.01, 0.1, drift=True), 4)
    0.25
    """
    st = view.stats
    if st.n_eff <= 0:
        return view.initial_rate
    b = max(budget, 1e-9)
    f = 0.0
    if idx > 0:
        j = idx - 1
        gain = (st.cost[idx] - st.cost[j]) / max(1.0 - st.cost[idx], 0.05)
        gap, width = (1.0 - band) * budget - st.loss[j], st.ucb[j] - st.loss[j]
        if gain >= 0.05 and gap >= reach * width:
            f = width / b
    if idx < len(st.taus) - 1:
        f = max(f, (st.ucb[idx] - keep_from * budget) / ((1.0 - keep_from) * b))
    if drift:
        f = 1.0
    f = min(1.0, max(0.0, f))
    return view.min_rate + (view.max_rate - view.min_rate) * f


def bound_basis(st, idx: int) -> str:
    """Which evidence the bound at ``taus[idx]`` rests on, for the record's reason.

    >>> from stopwise.daemon.core.estimator import TauStats
    >>> st = TauStats((0.9, 1.0), (0.0, 0.0), (0.004, 0.0), (0.5, 1.0), 800, 5000, 900, source=("pair", "exact"),
    ...               ref=1.0, n_pair=4000)
    >>> bound_basis(st, 0)
    'bound: served traffic vs 1 (4000 runs) + direct at 1'
    """
    src = st.source[idx] if st.source else "direct"
    if src == "exact":
        return "bound: exact (no early stop)"
    if src == "pair":
        return f"bound: served traffic vs {st.ref:g} ({st.n_pair:.0f} runs) + direct at {st.ref:g}"
    return f"bound: direct ({st.n_eff:.0f} complete runs; labels where given, disagreement elsewhere)"


RATE_RULES = ("voi", "uncertainty")


class ReferencePolicy(Policy):
    name = "reference"

    def __init__(self, integral_gain: float | None = None, step_scale: float = 0.05, max_credit: float = 0.0,
                 band: float = 0.05, rate_rule: str = "voi", drift_half_life: float = 100.0, keep_from: float = 0.6,
                 reach: float = 0.5, leave_band: float = 0.2) -> None:
        if rate_rule not in RATE_RULES:
            raise ValueError(f"rate_rule: {rate_rule!r} is not one of {', '.join(RATE_RULES)}")
        self.integral_gain = integral_gain
        self.rate_rule = rate_rule
        self.drift_half_life = drift_half_life
        self.keep_from = keep_from
        self.reach = reach
        self.leave_band = leave_band
        self.band = band
        self.step_scale = step_scale
        self.max_credit = max_credit
        self._pending: dict[str, list[int]] = {}   # key -> [observations, losses] since last decide
        self._ratio: dict[str, float] = {}
        self._recent: dict[str, list[float]] = {}  # key -> [decayed observations, decayed losses]

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        obs = outcome.served_observation
        if obs is None:
            return
        acc = self._pending.setdefault(context_key, [0, 0])
        acc[0] += 1
        acc[1] += obs
        d = self._decay
        rec = self._recent.setdefault(context_key, [0.0, 0.0])
        rec[0] = rec[0] * d + 1.0
        rec[1] = rec[1] * d + obs

    @cached_property
    def _decay(self) -> float:
        """Per-observation decay of the drift detector's memory (computed on
        first use, so policies pickled before it existed restore as well)."""
        return 0.5 ** (1.0 / self.drift_half_life)

    def drifting(self, context_key: str, budget: float, confidence: float) -> bool:
        """True when the recent realized loss on served traffic is over
        ``budget`` with ``confidence`` (its Clopper-Pearson LOWER bound is)."""
        rec = self._recent.get(context_key)
        return bool(rec) and cp_lower(rec[1], rec[0], confidence) > budget

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
        drift = self.drifting(context_key, view.budget, view.confidence)
        if drift and r > 1.0:   # credit is forfeited as soon as served traffic is clearly over budget
            r = self._ratio[context_key] = 1.0
        budget = view.budget * r
        idx = ltt_index(view.stats, budget)
        cur = view.stats.nearest(view.current_threshold)
        # leaving 1.0 (every run complete, weight 1) turns the complete runs into exploration
        # runs with inverse-propensity weights, which shrinks Kish's n_eff: enter with more room
        band = self.leave_band if cur == len(view.taus) - 1 else self.band
        strict = ltt_index(view.stats, budget * (1.0 - band))
        if idx <= cur:  # the current threshold is still certified: keep it unless clearly beaten
            idx = min(cur, strict)
        if drift:  # the estimates are stale: step back from the current threshold at least one grid step
            idx = max(idx, min(cur + 1, len(view.taus) - 1))
        tau = view.taus[idx]
        if self.rate_rule == "voi":
            rate = voi_rate(view, idx, budget, self.band, drift, self.keep_from, self.reach)
        else:
            rate = uncertainty_rate(view, idx)
        if idx < len(view.taus) - 1:
            # served below 1.0, complete runs carry weight 1 / rate: a sharp drop of the rate
            # would shrink Kish's n_eff and un-certify the threshold it just certified
            rate = max(rate, min(view.max_rate, view.current_explore_rate / 2.0))
        reason = f"ltt: ucb {view.stats.ucb[idx]:.4f} <= budget {budget:.4f} (ratio {r:.2f}); {bound_basis(view.stats, idx)}; explore {rate:.3f} (~{100 * rate * (1.0 - view.stats.cost[idx]):.1f}% of tokens)"
        if drift:
            reason = f"drift: realized loss over budget; {reason}"
        return Proposal(tau, rate, reason, **estimates(view, idx))
