"""A/B split between two policies, with an always-valid sequential comparison.

Thresholds are published per context, so the split is by a stable hash of
the context key (blake2b): a fraction ``split`` of contexts follows ``a``,
the rest ``b``; both learn everything. The comparison metric is the reward
per served request, ``savings - penalty * loss`` of the served threshold,
observed on exploration runs (a uniform sample of served traffic). Each
arm's mean gets an asymptotic confidence sequence (Robbins' normal-mixture
boundary with the running sample standard deviation plugged in, floored
at 0.05 -- the "asymptotic CS" of Waudby-Smith et al., 2021), each at level
``alpha / 2``; the comparison is decided once the intervals separate, and
peeking at it after every example keeps the error (asymptotically) below
``alpha``.

>>> p = ABPolicy(split=0.5)
>>> p.arm("task=qa") in ("a", "b")
True
>>> p.comparison()["decided"] is None
True
"""

from __future__ import annotations

import dataclasses
import math

from stopwise.daemon.stoprule import explore_draw, stop_index

from .base import Outcome, Policy, Proposal, View
from .reference import ReferencePolicy
from .static import StaticPolicy


def confidence_radius(n: int, sigma: float, alpha: float) -> float:
    """Normal-mixture confidence-sequence radius for the mean of ``n``
    sigma-sub-Gaussian observations (Robbins' mixture, as in Howard et al.
    2021, with unit mixing variance): ``sigma * sqrt(2 (n + 1) / n^2 *
    log(sqrt(n + 1) / alpha))``; valid simultaneously for all ``n``.

    >>> confidence_radius(10000, 1.0, 0.05) < confidence_radius(100, 1.0, 0.05)
    True
    """
    if n <= 0:
        return math.inf
    return sigma * math.sqrt(2.0 * (n + 1.0) / (n * n) * math.log(math.sqrt(n + 1.0) / alpha))


class ABPolicy(Policy):
    name = "ab"

    def __init__(self, a: Policy | None = None, b: Policy | None = None, split: float = 0.5,
                 penalty: float = 10.0, alpha: float = 0.05) -> None:
        self.a = a
        self.b = b
        self.split = split
        self.penalty = penalty
        self.alpha = alpha
        self._a = a.clone() if a is not None else ReferencePolicy()
        self._b = b.clone() if b is not None else StaticPolicy(threshold=0.95)
        self._sums = {"a": [0, 0.0, 0.0], "b": [0, 0.0, 0.0]}  # n, sum, sum of squares

    def arm(self, context_key: str) -> str:
        return "a" if explore_draw(context_key) < self.split else "b"

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        self._a.learn_one(context_key, outcome)
        self._b.learn_one(context_key, outcome)
        obs = outcome.served_observation
        if obs is None:
            return
        cps = outcome.example.checkpoints
        k = stop_index(cps, outcome.example.threshold)
        reward = (1.0 - cps[k][0] / (cps[-1][0] or 1)) - self.penalty * obs
        s = self._sums[self.arm(context_key)]
        s[0] += 1
        s[1] += reward
        s[2] += reward * reward

    def comparison(self) -> dict:
        """Means, always-valid intervals and the decision ('a', 'b' or None)."""
        out: dict = {}
        for arm, (n, s, s2) in self._sums.items():
            mean = s / n if n else 0.0
            sd = math.sqrt(max(0.0, s2 / n - mean * mean)) if n else 0.0
            r = confidence_radius(n, max(sd, 0.05), self.alpha / 2.0)
            out[arm] = {"n": n, "mean": mean, "lo": mean - r, "hi": mean + r}
        a, b = out["a"], out["b"]
        out["decided"] = "a" if a["lo"] > b["hi"] else "b" if b["lo"] > a["hi"] else None
        return out

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        arm = self.arm(context_key)
        prop = (self._a if arm == "a" else self._b).decide(context_key, view, now)
        return dataclasses.replace(prop, reason=f"ab[{arm}]: {prop.reason}")
