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

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import accumulate
from operator import itemgetter
from typing import Sequence

from ..stoprule import NO_EARLY_STOP, stop_index
from .examples import LabelledExample

_SCORE = itemgetter(1)
_ANSWER = itemgetter(2)

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


@lru_cache(maxsize=64)
def _grid(taus: tuple[float, ...]) -> tuple[tuple[float, ...], int, bool]:
    """(taus below 1.0, how many are not, whether ``taus`` ascend with the
    ones below 1.0 first) -- per grid, memoised."""
    below = tuple(t for t in taus if t < NO_EARLY_STOP)
    ascending = all(a <= b for a, b in zip(taus, taus[1:])) and taus[:len(below)] == below
    return below, len(taus) - len(below), ascending


def stop_indices(checkpoints, taus: Sequence[float]) -> list[int]:
    """``stop_index(checkpoints, tau)`` for every tau of ``taus``, with one
    running maximum of the scores and a bisection per tau (any order).

    >>> stop_indices([(1, 0.3, "a"), (2, 0.9, "b"), (3, 0.95, "b")], (0.2, 0.5, 0.93, 1.0))
    [0, 1, 2, 2]
    """
    last = len(checkpoints) - 1
    # running max of the scores before the last checkpoint: the first index
    # whose running max reaches tau is the first score >= tau (else: last)
    runmax = list(accumulate(map(_SCORE, checkpoints[:last]), max))
    return [bisect_left(runmax, t) if t < NO_EARLY_STOP else last for t in taus]


def evaluate(ex: LabelledExample, taus: Sequence[float]) -> Counterfactual:
    """(loss, cost, em) at every tau of ``taus`` (ascending, with 1.0) for one example."""
    cps = ex.checkpoints
    taus = tuple(taus)
    below, n_top, ascending = _grid(taus)
    tau_s = ex.threshold
    last = len(cps) - 1
    gold = ex.gold_answer_hash
    if not ex.complete:
        # only the taus at or below the served one are informed: their stop
        # points lie in the observed prefix
        if gold is None:
            delivered = cps[ex.stop_index][2]
            em = ex.em
            other = 0 if em == 1 else None
        if ascending:
            m = bisect_right(below, tau_s)
            ems = []
            k = 0
            for t in below[:m]:
                while k < last and cps[k][1] < t:
                    k += 1
                a = cps[k][2]
                if gold is not None:
                    ems.append(1 if a == gold else 0)
                else:
                    ems.append(em if a == delivered else other)
            ems = (*ems, *((None,) * (len(taus) - m)))
        else:
            right = correctness(ex)
            ems = tuple([right(cps[stop_index(cps, t)][2]) if t <= tau_s and t < NO_EARLY_STOP else None
                         for t in taus])
        none = (None,) * len(taus)
        return Counterfactual(taus, none, none, ems, 0.0, None, None, False)
    runmax = list(accumulate(map(_SCORE, cps[:last]), max))
    if ascending:
        stops = list(map(partial(bisect_left, runmax), below))
        stops += [last] * n_top
    else:
        stops = [bisect_left(runmax, t) if t < NO_EARLY_STOP else last for t in taus]
    answers = list(map(_ANSWER, cps))
    # correctness of every checkpoint's answer (see ``correctness``)
    if gold is not None:
        right = [1 if a == gold else 0 for a in answers]
    else:
        delivered = answers[ex.stop_index]
        em = ex.em
        other = 0 if em == 1 else None
        right = [em if a == delivered else other for a in answers]
    a_full = answers[last]
    full = cps[last][0]
    if full:
        cost = tuple(map([cp[0] / full for cp in cps].__getitem__, stops))
    else:
        cost = (1.0,) * len(taus)
    em_full = right[last]
    ems = tuple(map(right.__getitem__, stops))
    k_s = bisect_left(runmax, tau_s) if tau_s < NO_EARLY_STOP else last
    crossed = k_s < last
    weight = ex.weight * (min(MAX_IPW, 1.0 / ex.propensity) if (crossed and ex.explore) else 1.0)
    if em_full is None:
        return Counterfactual(taus, (None,) * len(taus), cost, ems, 0.0, None, None, True)
    if em_full == 1:
        lost = [0 if a == a_full else 1 for a in answers]
        loss = tuple(map(lost.__getitem__, stops))
        served = lost[k_s]
    else:
        loss = (0,) * len(taus)
        served = 0
    return Counterfactual(taus, loss, cost, ems, weight, served, em_full, True)
