"""The policy protocol, in River's shape.

A policy is configured by its constructor arguments, stored under the same
attribute names (immutable defaults); ``clone()`` returns a fresh, unlearned
copy with the same parameters. It learns from outcomes and decides per
context:

* ``learn_one(context_key, outcome)``: one labelled example's
  :class:`Outcome` (the example and its counterfactual evaluation), called
  for the example's context and each of its ancestors;
* ``decide(context_key, view, now) -> Proposal``: a threshold and an
  exploration rate from the :class:`View` (the estimator's per-tau stats,
  the budget, the model's prediction, the current record, the load).

The controller's guardrails then clamp, rate-limit and gate the proposal.

>>> from stopwise.policies import make_policy
>>> p = make_policy("static", threshold=0.95)
>>> q = p.clone()
>>> q.threshold, q is p
(0.95, False)
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Sequence

from stopwise.daemon.core.counterfactual import Counterfactual
from stopwise.daemon.core.estimator import TauStats
from stopwise.daemon.core.examples import LabelledExample
from stopwise.daemon.stoprule import NO_EARLY_STOP


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a policy learns from: one example and what it says per tau."""

    example: LabelledExample
    counterfactual: Counterfactual
    followup: bool = False
    """The label of a run this policy already learned unlabelled (its
    ``counterfactual`` is the labelled one): learn from it only what needs
    the label, or skip it (the default rules below do)."""

    @property
    def labelled(self) -> bool:
        return self.counterfactual.labelled

    @property
    def served_observation(self) -> float | None:
        """Loss surrogate at the served threshold on this request (the loss
        itself when labelled; the disagreement with the full answer when
        not: an upper bound), observed on exploration runs only -- a uniform
        random sample of served traffic (``None`` otherwise, and on
        follow-ups, whose run was observed already)."""
        if self.example.explore and self.counterfactual.complete and not self.followup:
            return self.counterfactual.served_loss
        return None


@dataclass(frozen=True)
class View:
    """What a policy sees of one context at decision time."""

    context_key: str
    stats: TauStats
    budget: float
    confidence: float = 0.95
    current_threshold: float = NO_EARLY_STOP
    current_explore_rate: float = 0.2
    min_rate: float = 0.02
    max_rate: float = 0.25
    initial_rate: float = 0.2
    default_threshold: float = NO_EARLY_STOP
    integral_gain: float = 0.5
    load: float = 0.0
    critical: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def taus(self) -> tuple[float, ...]:
        return self.stats.taus

    @property
    def model_loss(self) -> tuple[float, ...] | None:
        """The River model's predicted L(tau) per tau (the shrinkage prior)."""
        return self.stats.prior


@dataclass(frozen=True, slots=True)
class Proposal:
    """A policy's answer for one context."""

    threshold: float
    explore_rate: float
    reason: str = ""
    est_loss: float | None = None
    est_loss_ucb: float | None = None
    est_savings: float | None = None


def _fresh(value):
    """A parameter value for a clone: child policies are cloned (unlearned)."""
    if isinstance(value, Policy):
        return value.clone()
    if isinstance(value, (tuple, list)) and any(isinstance(v, Policy) for v in value):
        return type(value)(_fresh(v) for v in value)
    return copy.deepcopy(value)


class Policy:
    """Base class: parameters are the constructor's arguments."""

    name = "base"

    def _get_params(self) -> dict:
        sig = inspect.signature(type(self).__init__)
        return {p: _fresh(getattr(self, p)) for p in sig.parameters if p != "self"}

    def clone(self, **new_params) -> "Policy":
        """A fresh, unlearned copy with the same (or updated) parameters."""
        params = self._get_params()
        for k in new_params:
            if k not in params:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}; valid: {sorted(params)}")
        params.update(new_params)
        return type(self)(**params)

    def learn_one(self, context_key: str, outcome: Outcome) -> None:
        """Learn from one outcome (default: nothing)."""

    def decide(self, context_key: str, view: View, now: float) -> Proposal:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"


def ltt_index(stats: TauStats, budget: float) -> int:
    """Learn-then-Test fixed sequence: scan from 1.0 toward aggressive taus,
    keep going while the UCB stays under ``budget``; the index of the last
    tau that passed (the index of 1.0 if none).

    >>> from stopwise.daemon.core.estimator import TauStats
    >>> st = TauStats((0.5, 0.8, 0.9, 1.0), (0.1, 0.0, 0.0, 0.0), (0.2, 0.005, 0.008, 0.0), (0.3, 0.5, 0.7, 1.0), 500, 500, 500)
    >>> st.taus[ltt_index(st, 0.01)]
    0.8
    """
    return ltt_scan(stats.ucb, budget)


def ltt_scan(ucbs: Sequence[float], budget: float) -> int:
    """:func:`ltt_index` on UCBs aligned with an ascending tau grid ending
    with 1.0.

    >>> ltt_scan([0.001, 0.02, 0.005, 0.0], 0.01)
    2
    """
    idx = len(ucbs) - 1
    for i in range(len(ucbs) - 2, -1, -1):
        if ucbs[i] <= budget:
            idx = i
        else:
            break
    return idx


def uncertainty_rate(view: View, idx: int) -> float:
    """Exploration rate rising with the uncertainty (UCB - mean) at the next
    more aggressive tau than ``idx`` (the one the policy tries to certify;
    at ``idx`` itself when that next tau's estimate is already over budget),
    relative to the budget, within ``[min_rate, max_rate]``; ``initial_rate``
    before any informative data."""
    st = view.stats
    if st.n_eff <= 0:
        return view.initial_rate
    j = max(0, idx - 1)
    if st.loss[j] > view.budget:  # the next tau is clearly out: no use exploring for it
        j = idx
    width = max(0.0, st.ucb[j] - st.loss[j])
    frac = min(1.0, width / max(view.budget, 1e-9))
    return view.min_rate + (view.max_rate - view.min_rate) * frac


def estimates(view: View, idx: int) -> dict:
    st = view.stats
    return {"est_loss": min(1.0, max(0.0, st.loss[idx])), "est_loss_ucb": min(1.0, max(0.0, st.ucb[idx])),
            "est_savings": 1.0 - st.cost[idx]}
