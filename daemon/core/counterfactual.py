"""What one labelled example says about every threshold of the grid.

Definitions (DESIGN section 1). For a full run with checkpoints
``(tokens_k, score_k, answer_k)``, final answer ``a_full`` and its EM
``EM_full``, the stop point under ``tau`` is ``k(tau) = stop_index(cps, tau)``
(:mod:`stopwise.daemon.stoprule`) and

* loss ``L(tau) = 1`` iff ``EM_full = 1`` and ``answer_k(tau) != a_full``;
* cost ``T(tau) = tokens_k(tau) / tokens_full``;
* ``tau = 1.0`` never stops early: loss 0, cost 1.

Which answers' correctness is known. With ``gold_answer_hash``: every
answer's (hash equality). With only ``em`` (of the delivered answer): the
delivered answer's and that of every checkpoint with the same hash; and when
``em = 1`` every other hash is wrong (exact match).

The estimator (unbiased, Horvitz-Thompson). Let ``tau_s`` be the served
threshold and ``A`` the event "the run crosses ``tau_s`` before its last
checkpoint" (it would be cut short unless it explores). The exploration draw
is a hash of request_id, independent of the run, so:

* a COMPLETE run not in ``A`` (never crossed, or served 1.0) would have been
  complete whether it explored or not: weight ``1``;
* a COMPLETE run in ``A`` is complete only because it explored, which
  happens with probability ``propensity``: weight ``1 / propensity``
  (clipped at ``MAX_IPW`` = 100, i.e. exact for exploration rates >= 1%);
* an EARLY-STOPPED (censored) run gets weight ``0`` for L and T: its full
  answer (the reference of the drop) and full token count are unknown. It
  still informs, exactly, the taus at or below ``tau_s`` (their stop points
  lie in the observed prefix): ``em_at`` gives the EM of the answer each of
  those taus would deliver, when known; taus above ``tau_s`` get ``None``.

``sum(w * loss) / sum(w)`` over examples is then a consistent (self-normalised,
Hajek) estimate of ``L(tau)`` over all traffic, and likewise for ``T``. The
feedback ``weight`` multiplies the HT weight. A complete run whose
``EM_full`` is unknown (em only, delivered answer differs from the full one)
gets weight 0 for L (never happens for runs delivering the full answer).

>>> from stopwise.daemon.core.examples import LabelledExample
>>> cps = ((10, 0.5, "x"), (20, 0.9, "y"), (30, 0.95, "y"))
>>> ex = LabelledExample("r", {}, "*", {}, 0.0, 1.0, 0, False, 1.0, True, 2, cps, 30, 1, None, 1.0, 1.0)
>>> cf = evaluate(ex, (0.5, 0.9, 1.0))
>>> cf.loss, [round(c, 3) for c in cf.cost], cf.weight
((1, 0, 0), [0.333, 0.667, 1.0], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..stoprule import NO_EARLY_STOP, stop_index
from .examples import LabelledExample

MAX_IPW = 100.0
"""Inverse-propensity weights are clipped here (a client logging a tiny
exploration rate must not let one run outweigh thousands)."""


@dataclass(frozen=True, slots=True)
class Counterfactual:
    """Per-tau outcome of one example, aligned with ``taus`` (ascending,
    ending with 1.0). ``None`` = not informed by this example."""

    taus: tuple[float, ...]
    loss: tuple[int | None, ...]
    cost: tuple[float | None, ...]
    em_at: tuple[int | None, ...]
    weight: float            # Horvitz-Thompson weight of loss/cost (0 = censored)
    served_loss: int | None  # loss at the served threshold (None if unknown)
    em_full: int | None
    complete: bool

    @property
    def informative(self) -> bool:
        return self.weight > 0.0


def with_no_stop(taus: Sequence[float]) -> tuple[float, ...]:
    """The grid, ascending, plus 1.0 (no early stop).

    >>> with_no_stop((0.9, 0.5))
    (0.5, 0.9, 1.0)
    """
    return tuple(sorted(set(float(t) for t in taus) | {NO_EARLY_STOP}))


def correctness(ex: LabelledExample):
    """A function answer_hash -> 1/0/None from the example's labels."""
    gold = ex.gold_answer_hash
    if gold is not None:
        return lambda h: int(h == gold)
    delivered = ex.checkpoints[ex.stop_index][2]
    em = ex.em

    def known(h: str) -> int | None:
        if h == delivered:
            return em
        if em == 1:
            return 0
        return None

    return known


def stop_indices(checkpoints, taus: Sequence[float]) -> list[int]:
    """``stop_index(checkpoints, tau)`` for every tau of an ascending
    sequence, in one pass (stop points only move later as tau grows).

    >>> stop_indices([(1, 0.3, "a"), (2, 0.9, "b"), (3, 0.95, "b")], (0.2, 0.5, 0.93, 1.0))
    [0, 1, 2, 2]
    """
    last = len(checkpoints) - 1
    out = []
    k = 0
    for t in taus:
        if t >= NO_EARLY_STOP:
            out.append(last)
            continue
        while k < last and checkpoints[k][1] < t:
            k += 1
        out.append(k)
    return out


def evaluate(ex: LabelledExample, taus: Sequence[float]) -> Counterfactual:
    """(loss, cost, em) at every tau of ``taus`` (ascending, with 1.0) for one example."""
    cps = ex.checkpoints
    correct = correctness(ex)
    tau_s = ex.threshold
    if not ex.complete:
        ems = tuple(correct(cps[stop_index(cps, t)][2]) if t <= tau_s and t < NO_EARLY_STOP else None for t in taus)
        none = (None,) * len(taus)
        return Counterfactual(tuple(taus), none, none, ems, 0.0, None, None, False)
    a_full = cps[-1][2]
    full_tokens = cps[-1][0] or 1
    em_full = correct(a_full)
    stops = stop_indices(cps, taus)
    cost = tuple(cps[k][0] / full_tokens if cps[-1][0] else 1.0 for k in stops)
    ems = tuple(correct(cps[k][2]) for k in stops)
    k_s = stop_index(cps, tau_s)
    crossed = k_s < len(cps) - 1
    weight = ex.weight * (min(MAX_IPW, 1.0 / ex.propensity) if (crossed and ex.explore) else 1.0)
    if em_full is None:
        return Counterfactual(tuple(taus), (None,) * len(taus), cost, ems, 0.0, None, None, True)
    loss = tuple(int(em_full == 1 and cps[k][2] != a_full) for k in stops)
    served = int(em_full == 1 and cps[k_s][2] != a_full)
    return Counterfactual(tuple(taus), loss, cost, ems, weight, served, em_full, True)
