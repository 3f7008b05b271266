"""The naive feedback loop (a baseline): raise the threshold after a
realized EM drop, lower it otherwise -- no confidence bounds.

Realized drops are the losses the served threshold caused on exploration
runs (:attr:`~.base.Outcome.served_observation`). At each decision: any new
drop since the last decision moves the threshold ``up`` grid steps toward
1.0; otherwise it moves ``down`` steps toward aggressive (at most one
move per ``min_observations`` served observations).

>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View
>>> st = TauStats((0.5, 0.9, 1.0), (0, 0, 0), (1, 1, 0), (0.3, 0.6, 1.0), 0, 0, 0)
>>> p = NaivePolicy(min_observations=0)
>>> [p.decide("*", View("*", st, 0.01), t).threshold for t in range(3)]
[0.9, 0.5, 0.5]
"""

from __future__ import annotations

from .base import NO_EARLY_STOP, Outcome, Policy, Proposal, View, estimates


class NaivePolicy(Policy):
    name = "naive"

    def __init__(self, up: int = 2, down: int = 1, min_observations: int = 20, explore_rate: float | None = None) -> None:
        self.up = up
        self.down = down
        self.min_observations = min_observations
        self.explore_rate = explore_rate
        self._obs: dict[str, list[int]] = {}
        self._tau: dict[str, float] = {}

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        obs = outcome.served_observation
        if obs is not None:
            acc = self._obs.setdefault(context_key, [0, 0])
            acc[0] += 1
            acc[1] += obs

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        taus = view.taus
        tau = self._tau.get(context_key, NO_EARLY_STOP)
        i = min(range(len(taus)), key=lambda j: abs(taus[j] - tau))
        n, drops = self._obs.get(context_key, (0, 0))
        reason = "naive: hold"
        if drops:
            i = min(len(taus) - 1, i + self.up)
            reason = f"naive: {drops} realized drop(s), up"
            self._obs.pop(context_key, None)
        elif n >= self.min_observations:
            i = max(0, i - self.down)
            reason = "naive: no drop, down"
            self._obs.pop(context_key, None)
        self._tau[context_key] = taus[i]
        rate = view.initial_rate if self.explore_rate is None else self.explore_rate
        return Proposal(taus[i], rate, reason, **estimates(view, i))
