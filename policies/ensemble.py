"""Combine child policies: by default the most conservative threshold
(``combine="max"``); also ``"min"`` (most aggressive) and ``"median"``.
Every child learns every outcome; the exploration rate is the children's
maximum.

>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View
>>> from stopwise.policies.static import StaticPolicy
>>> st = TauStats((0.5, 0.9, 1.0), (0, 0, 0), (1, 1, 0), (1, 1, 1), 0, 0, 0)
>>> e = EnsemblePolicy((StaticPolicy(0.9), StaticPolicy(0.95)))
>>> e.decide("*", View("*", st, 0.01), 0.0).threshold
0.95
"""

from __future__ import annotations

import dataclasses
import statistics

from .base import Outcome, Policy, Proposal, View
from .reference import ReferencePolicy
from .static import StaticPolicy

_COMBINE = {"max": max, "min": min, "median": statistics.median_low}


class EnsemblePolicy(Policy):
    name = "ensemble"

    def __init__(self, policies: tuple[Policy, ...] | None = None, combine: str = "max") -> None:
        if combine not in _COMBINE:
            raise ValueError(f"combine {combine!r}: valid are {sorted(_COMBINE)}")
        self.policies = tuple(policies) if policies is not None else None
        self.combine = combine
        children = self.policies if self.policies else (ReferencePolicy(), StaticPolicy(threshold=0.95))
        self._children = tuple(p.clone() for p in children)

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        for p in self._children:
            p.learn_one(context_key, outcome)

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        props = [p.decide(context_key, view, now) for p in self._children]
        tau = _COMBINE[self.combine]([p.threshold for p in props])
        chosen = next(p for p in props if p.threshold == tau)
        rate = max(p.explore_rate for p in props)
        return dataclasses.replace(chosen, threshold=tau, explore_rate=rate,
                                   reason=f"ensemble[{self.combine}]: {chosen.reason}")
