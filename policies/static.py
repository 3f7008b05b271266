"""A fixed threshold for every context (baseline; 1.0 = the kill switch).

>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View
>>> st = TauStats((0.9, 1.0), (0.0, 0.0), (1.0, 0.0), (0.5, 1.0), 0, 0, 0)
>>> StaticPolicy(threshold=0.95).decide("*", View("*", st, budget=0.01), 0.0).threshold
0.95
"""

from __future__ import annotations

from .base import NO_EARLY_STOP, Policy, Proposal, View, estimates


class StaticPolicy(Policy):
    name = "static"

    def __init__(self, threshold: float = NO_EARLY_STOP, explore_rate: float | None = None) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold!r} must be in [0, 1]")
        self.threshold = threshold
        self.explore_rate = explore_rate

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        rate = view.min_rate if self.explore_rate is None else self.explore_rate
        return Proposal(self.threshold, rate, f"static {self.threshold:g}", **estimates(view, view.stats.nearest(self.threshold)))
