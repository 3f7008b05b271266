"""Offline calibration: Learn-then-Test on the first ``n_calibration``
requests of each context, then frozen (the "calibrate once" baseline).

Until a context has seen ``n_calibration`` examples it stays at 1.0 and
collects Horvitz-Thompson weighted losses per tau (its own counts, no
recency decay); then it picks the lowest tau whose Clopper-Pearson UCB is
under the budget for it and every more conservative tau, and never moves
again.

>>> from stopwise.daemon.core.counterfactual import Counterfactual
>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View, Outcome
>>> cf = Counterfactual((0.5, 0.9, 1.0), (1, 0, 0), (0.3, 0.6, 1.0), (0, 1, 1), 1.0, 0, 1, True)
>>> p = OfflinePolicy(n_calibration=400)
>>> for _ in range(400): p.learn_one("*", Outcome(None, cf))
>>> st = TauStats((0.5, 0.9, 1.0), (0, 0, 0), (1, 1, 0), (1, 1, 1), 0, 0, 0)
>>> p.decide("*", View("*", st, 0.01), 0.0).threshold
0.9
"""

from __future__ import annotations

from stopwise.daemon.core.bounds import cp_upper, kish

from .base import NO_EARLY_STOP, Outcome, Policy, Proposal, View, ltt_scan


class OfflinePolicy(Policy):
    name = "offline"

    def __init__(self, n_calibration: int = 2000, explore_rate: float = 0.0) -> None:
        self.n_calibration = n_calibration
        self.explore_rate = explore_rate
        self._acc: dict[str, list] = {}     # key -> [n, W, W2, [S_L], [S_T]]
        self._frozen: dict[str, Proposal] = {}

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        if context_key in self._frozen:
            return
        cf = outcome.counterfactual
        acc = self._acc.get(context_key)
        if acc is None:
            acc = self._acc[context_key] = [0, 0.0, 0.0, [0.0] * len(cf.taus), [0.0] * len(cf.taus)]
        if acc[0] >= self.n_calibration:
            return
        acc[0] += 1
        if cf.weight > 0:
            w = cf.weight
            acc[1] += w
            acc[2] += w * w
            for i, (lo, co) in enumerate(zip(cf.loss, cf.cost)):
                acc[3][i] += w * lo
                acc[4][i] += w * co

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        if context_key in self._frozen:
            return self._frozen[context_key]
        acc = self._acc.get(context_key)
        if acc is None or acc[0] < self.n_calibration or acc[1] <= 0:
            seen = acc[0] if acc else 0
            return Proposal(NO_EARLY_STOP, view.initial_rate, f"offline: calibrating {seen}/{self.n_calibration}")
        n_eff = kish(acc[1], acc[2])
        taus = view.taus
        ucbs = [cp_upper(acc[3][i] / acc[1] * n_eff, n_eff, view.confidence) for i in range(len(taus))]
        idx = ltt_scan(ucbs, view.budget)
        prop = Proposal(taus[idx], self.explore_rate, f"offline: frozen after {acc[0]} requests",
                        acc[3][idx] / acc[1], min(1.0, ucbs[idx]) if idx < len(taus) - 1 else 0.0,
                        1.0 - acc[4][idx] / acc[1])
        self._frozen[context_key] = prop
        self._acc.pop(context_key, None)
        return prop
