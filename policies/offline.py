"""Offline calibration: Learn-then-Test on the first ``n_calibration``
(600) LABELLED FULL runs of each context, then frozen (the "calibrate once"
baseline of issue 9).

What counts: an outcome whose example carries a label (``em`` or
``gold_answer_hash`` not None) and whose run is complete with a positive
Horvitz-Thompson weight, once per request_id (an unlabelled outcome, an
early-stopped run, and a second outcome for an already counted request --
e.g. the labelled follow-up of a run -- are ignored). The ids counted are
kept per context until it freezes, so at most ``n_calibration`` per context.

Until a context has its ``n_calibration`` runs it serves 1.0 (every run is
then a full run, exploring or not) and asks for ``max_rate`` exploration,
so full runs keep coming even where the threshold actually served is lower
(a stale record, a client's own default); with 1.0 served, exploring costs
no tokens. Then, once: per tau, the Clopper-Pearson upper bound at the
configured confidence on the mean loss of those runs (exactly the binomial
count over n when every weight is 1, as at 1.0; the Kish effective size of
the weights otherwise), the Learn-then-Test fixed-sequence scan from 1.0
down (:func:`~.base.ltt_scan`), and the threshold is frozen for good, with
``explore_rate`` (default: the configured ``min_rate``) exploration.

>>> from stopwise.daemon.core.counterfactual import Counterfactual
>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.daemon.core.examples import LabelledExample
>>> from stopwise.policies.base import View, Outcome
>>> cf = Counterfactual((0.5, 0.9, 1.0), (1, 0, 0), (0.3, 0.6, 1.0), (0, 1, 1), 1.0, 0, 1, True, True)
>>> def ex(i): return LabelledExample(f"r{i}", {}, "*", {}, 0.0, 1.0, 0, False, 1.0, True, 0, ((1, 0.9, "a"),), 1, 1, None, 1.0, 1.0)
>>> p = OfflinePolicy(n_calibration=400)
>>> for i in range(400): p.learn_one("*", Outcome(ex(i), cf))
>>> st = TauStats((0.5, 0.9, 1.0), (0, 0, 0), (1, 1, 0), (1, 1, 1), 0, 0, 0)
>>> p.decide("*", View("*", st, 0.01), 0.0).threshold
0.9
"""

from __future__ import annotations

from stopwise.daemon.core.bounds import cp_upper, kish

from .base import NO_EARLY_STOP, Outcome, Policy, Proposal, View, ltt_scan


class _Calibration:
    """Weighted sums over the counted runs of one context."""

    __slots__ = ("ids", "w", "w2", "loss", "cost")

    def __init__(self, size: int) -> None:
        self.ids: set[str] = set()
        self.w = self.w2 = 0.0
        self.loss = [0.0] * size
        self.cost = [0.0] * size


class OfflinePolicy(Policy):
    name = "offline"

    def __init__(self, n_calibration: int = 600, explore_rate: float | None = None) -> None:
        if n_calibration < 1:
            raise ValueError(f"n_calibration {n_calibration!r} must be >= 1")
        self.n_calibration = n_calibration
        self.explore_rate = explore_rate
        self._acc: dict[str, _Calibration] = {}
        self._frozen: dict[str, Proposal] = {}

    def counted(self, context_key: str) -> int:
        """Labelled full runs counted so far for ``context_key`` (the
        ``n_calibration`` it froze on once frozen)."""
        if context_key in self._frozen:
            return self.n_calibration
        acc = self._acc.get(context_key)
        return len(acc.ids) if acc else 0

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        if context_key in self._frozen:
            return
        ex, cf = outcome.example, outcome.counterfactual
        if not cf.labelled or not cf.complete or cf.weight <= 0.0:
            return
        if any(x is None for x in cf.loss) or any(x is None for x in cf.cost):
            return
        acc = self._acc.get(context_key)
        if acc is None:
            acc = self._acc[context_key] = _Calibration(len(cf.taus))
        if len(acc.ids) >= self.n_calibration or ex.request_id in acc.ids:
            return
        acc.ids.add(ex.request_id)
        w = cf.weight
        acc.w += w
        acc.w2 += w * w
        for i, (lo, co) in enumerate(zip(cf.loss, cf.cost)):
            acc.loss[i] += w * lo
            acc.cost[i] += w * co

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        if context_key in self._frozen:
            return self._frozen[context_key]
        acc = self._acc.get(context_key)
        seen = len(acc.ids) if acc else 0
        if acc is None or seen < self.n_calibration:
            return Proposal(NO_EARLY_STOP, view.max_rate,
                            f"offline: calibrating on labelled full runs {seen}/{self.n_calibration}")
        n_eff = kish(acc.w, acc.w2)
        taus = view.taus
        ucbs = [cp_upper(acc.loss[i] / acc.w * n_eff, n_eff, view.confidence) for i in range(len(taus))]
        idx = ltt_scan(ucbs, view.budget)
        rate = view.min_rate if self.explore_rate is None else self.explore_rate
        prop = Proposal(taus[idx], rate, f"offline: frozen after {seen} labelled full runs",
                        acc.loss[idx] / acc.w, min(1.0, ucbs[idx]) if idx < len(taus) - 1 else 0.0,
                        1.0 - acc.cost[idx] / acc.w)
        self._frozen[context_key] = prop
        del self._acc[context_key]
        return prop
