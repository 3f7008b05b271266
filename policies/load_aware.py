"""Load-aware budgets: spend more of the EM budget when the fleet is
overloaded, less on critical contexts -- never more than the budget.

The budget handed to the ``base`` policy is ``budget * f`` with
``f = idle_fraction + (1 - idle_fraction) * load`` (``load`` in [0, 1] from
:meth:`set_load`, or else from the view, which the controller fills from
``Controller.set_load``), times ``critical_fraction`` for contexts in
``critical`` (a key or any of its ancestors listed).

>>> from stopwise.daemon.core.estimator import TauStats
>>> from stopwise.policies.base import View
>>> st = TauStats((0.5, 0.9, 1.0), (0.006, 0.001, 0.0), (0.009, 0.004, 0.0), (0.4, 0.7, 1.0), 2000, 2000, 2000)
>>> p = LoadAwarePolicy(critical=("task=qa",))
>>> p.set_load(1.0); p.decide("task=math", View("task=math", st, 0.01, current_threshold=0.9), 0.0).threshold
0.5
>>> p.decide("task=qa|domain=x", View("task=qa|domain=x", st, 0.01, current_threshold=0.9), 0.0).threshold
0.9
>>> p.set_load(0.0); p.decide("task=math", View("task=math", st, 0.01, current_threshold=0.9), 0.0).threshold
0.9
"""

from __future__ import annotations

import dataclasses

from stopwise.daemon.context import parents

from .base import Outcome, Policy, Proposal, View
from .reference import ReferencePolicy


class LoadAwarePolicy(Policy):
    name = "load_aware"

    def __init__(self, base: Policy | None = None, idle_fraction: float = 0.5, critical: tuple[str, ...] = (),
                 critical_fraction: float = 0.5) -> None:
        if not (0.0 <= idle_fraction <= 1.0 and 0.0 <= critical_fraction <= 1.0):
            raise ValueError("idle_fraction and critical_fraction must be in [0, 1]")
        self.base = base
        self.idle_fraction = idle_fraction
        self.critical = tuple(critical)
        self.critical_fraction = critical_fraction
        self._base = base.clone() if base is not None else ReferencePolicy()
        self._load: float | None = None

    def set_load(self, load: float) -> None:
        """Fleet load in [0, 1] (overrides the view's)."""
        self._load = min(1.0, max(0.0, float(load)))

    def is_critical(self, context_key: str) -> bool:
        return any(k in self.critical for k in parents(context_key))

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        self._base.learn_one(context_key, outcome)

    def decide(self, context_key: str, view: View, now: float) -> Proposal:
        load = view.load if self._load is None else self._load
        f = self.idle_fraction + (1.0 - self.idle_fraction) * load
        if self.is_critical(context_key) or view.critical:
            f *= self.critical_fraction
        prop = self._base.decide(context_key, dataclasses.replace(view, budget=view.budget * f), now)
        return dataclasses.replace(prop, reason=f"load_aware(load {load:.2f}, x{f:.2f}): {prop.reason}")
