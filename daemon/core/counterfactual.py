"""What one example says about every threshold of the grid, with or
without a label.

Definitions (DESIGN section 1). For a full run with checkpoints
``(tokens_k, score_k, answer_k)``, final answer ``a_full`` and its EM
``EM_full``, the stop point under ``tau`` is ``k(tau) = stop_index(cps, tau)``
(:mod:`stopwise.daemon.stoprule`) and

* loss ``L(tau) = 1`` iff ``EM_full = 1`` and ``answer_k(tau) != a_full``;
* disagreement ``D(tau) = 1`` iff ``answer_k(tau) != a_full`` (no label
  needed; ``L <= D`` on every run);
* cost ``T(tau) = tokens_k(tau) / tokens_full``;
* ``tau = 1.0`` never stops early: loss 0, cost 1.

Per-run loss surrogate ``Z(tau)`` (the ``loss`` field): ``D(tau)`` for an
unlabelled complete run; with a label, ``D - c (D - L)`` where ``c`` is the
feedback weight clipped to ``[0, 1]`` (1 = a trusted label: ``Z = L``).
``Z >= L`` on every run, so any upper bound on ``E[Z]`` bounds ``E[L]``:
labels tighten the bound, they are never required.

Pairwise disagreements (the ``ids`` and ``pair_w`` fields): every run,
complete or cut short, shows the answers at the stop points of all taus
whose stop lies in its observed prefix. For ``i < j``,
``1{answer_k(tau_i) != answer_k(tau_j)}`` is observed whenever ``tau_j``'s
stop is; ``ids[i]`` names the answer at ``tau_i``'s stop (equal ids = equal
answers; ``-1`` = not observed) and ``pair_w[j]`` is the Horvitz-Thompson
weight of observing ``tau_j``'s stop: 1 when it lies at or before the served
stop (seen whether the run explores or not), ``1 / propensity`` when only an
exploration run reaches it, 0 when not observed. Since
``L(tau) <= 1{a_tau != a_r} + L(r)`` for any reference ``r``, these give the
risk of moving from the served threshold to any other from served traffic
alone (:mod:`.estimator`).

Weights (Horvitz-Thompson). Let ``tau_s`` be the served threshold and ``A``
the event "the run crosses ``tau_s`` before its last checkpoint". The
exploration draw is a hash of request_id, independent of the run, so a
COMPLETE run not in ``A`` has weight 1; a COMPLETE run in ``A`` (complete
only because it explored) ``1 / propensity`` (clipped at ``MAX_IPW``); an
EARLY-STOPPED run weight 0 for ``Z`` and ``T`` (its full answer is unknown),
but it still informs the pairwise disagreements and ``em_at`` of the taus
whose stop it reached.

>>> from stopwise.daemon.core.examples import LabelledExample
>>> cps = ((10, 0.5, "x"), (20, 0.9, "y"), (30, 0.95, "y"))
>>> ex = LabelledExample("r", {}, "*", {}, 0.0, 1.0, 0, False, 1.0, True, 2, cps, 30, 1, None, 1.0, 1.0)
>>> cf = evaluate(ex, (0.5, 0.9, 1.0))
>>> cf.loss, [round(c, 3) for c in cf.cost], cf.weight, cf.ids, cf.pair_w
((1.0, 0.0, 0.0), [0.333, 0.667, 1.0], 1.0, (0, 1, 1), (1.0, 1.0, 1.0))
>>> cut = LabelledExample("r", {}, "*", {}, 0.0, 0.9, 0, False, 1.0, False, 1, cps[:2], 30, None, None, 1.0, 0.0)
>>> c2 = evaluate(cut, (0.5, 0.9, 1.0))
>>> c2.weight, c2.ids, c2.pair_w, c2.labelled
(0.0, (0, 1, -1), (1.0, 1.0, 0.0), False)
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import accumulate
from operator import itemgetter
from typing import Sequence

from ..stoprule import NO_EARLY_STOP
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
    loss: tuple[float | None, ...]   # surrogate Z(tau) >= L(tau) (L itself with a trusted label)
    cost: tuple[float | None, ...]
    em_at: tuple[int | None, ...]
    weight: float            # Horvitz-Thompson weight of loss/cost (0 = cut short)
    served_loss: float | None  # Z at the served threshold (None if unknown)
    em_full: int | None
    complete: bool
    labelled: bool = False
    disagree: tuple[int, ...] | None = None   # D(tau) (complete runs)
    ids: tuple[int, ...] = ()                 # answer id at each tau's stop (-1: not observed)
    pair_w: tuple[float, ...] = ()            # HT weight of observing each tau's stop

    @property
    def informative(self) -> bool:
        return self.weight > 0.0


def with_no_stop(taus: Sequence[float]) -> tuple[float, ...]:
    """The grid, ascending, plus 1.0 (no early stop).

    >>> with_no_stop((0.9, 0.5))
    (0.5, 0.9, 1.0)
    """
    return tuple(sorted(set(float(t) for t in taus) | {NO_EARLY_STOP}))


def is_labelled(ex: LabelledExample) -> bool:
    """Whether feedback came with the example (an EM or a gold hash)."""
    return ex.em is not None or ex.gold_answer_hash is not None


def correctness(ex: LabelledExample):
    """A function answer_hash -> 1/0/None from the example's labels."""
    gold = ex.gold_answer_hash
    if gold is not None:
        return lambda h: int(h == gold)
    if ex.em is None:
        return lambda h: None
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
def _grid(taus: tuple[float, ...]) -> tuple[tuple[float, ...], int]:
    """(taus below 1.0, how many are not); the grid must ascend with 1.0 last."""
    below = tuple(t for t in taus if t < NO_EARLY_STOP)
    if list(taus) != sorted(taus) or taus[:len(below)] != below:
        raise ValueError(f"the tau grid must ascend and end with 1.0: {taus}")
    return below, len(taus) - len(below)


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


def _ids(answers: list[str], stops: list[int]) -> tuple[int, ...]:
    """Per tau, the index of the first checkpoint holding the answer at its
    stop (equal answers, equal ids); -1 where the stop is not observed."""
    first: dict[str, int] = {}
    canon = [first.setdefault(a, k) for k, a in enumerate(answers)]
    canon.append(-1)   # stops of -1 (not observed) map here
    return tuple(map(canon.__getitem__, stops))


def evaluate(ex: LabelledExample, taus: Sequence[float]) -> Counterfactual:
    """(surrogate loss, cost, em, pairwise evidence) at every tau of ``taus``
    (ascending, with 1.0) for one example, labelled or not."""
    cps = ex.checkpoints
    taus = tuple(taus)
    below, n_top = _grid(taus)
    k_taus = len(taus)
    tau_s = ex.threshold
    last = len(cps) - 1
    labelled = is_labelled(ex)
    answers = list(map(_ANSWER, cps))
    if not ex.complete:
        # observed: the taus whose first crossing lies in the prefix
        runmax = list(accumulate(map(_SCORE, cps), max))
        n_obs = len(runmax)
        stops = [k if k < n_obs else -1 for k in map(partial(bisect_left, runmax), below)] + [-1] * n_top
        ids = _ids(answers, stops)
        pair_w = tuple([1.0 if k >= 0 else 0.0 for k in stops])
        if labelled:
            right = correctness(ex)
            ems = tuple(right(answers[k]) if k >= 0 else None for k in stops)
        else:
            ems = (None,) * k_taus
        none = (None,) * k_taus
        return Counterfactual(taus, none, none, ems, 0.0, None, None, False, labelled, None, ids, pair_w)
    runmax = list(accumulate(map(_SCORE, cps[:last]), max))
    stops = list(map(partial(bisect_left, runmax), below)) + [last] * n_top
    a_full = answers[last]
    full = cps[last][0]
    if full:
        cost = tuple(map([cp[0] / full for cp in cps].__getitem__, stops))
    else:
        cost = (1.0,) * k_taus
    k_s = bisect_left(runmax, tau_s) if tau_s < NO_EARLY_STOP else last
    crossed = k_s < last
    ipw = min(MAX_IPW, 1.0 / ex.propensity) if (crossed and ex.explore) else 1.0
    ids = _ids(answers, stops)
    pair_w = tuple([1.0 if k <= k_s else ipw for k in stops])
    differs = [0 if a == a_full else 1 for a in answers]
    disagree = tuple(map(differs.__getitem__, stops))
    if labelled:
        right = correctness(ex)
        rights = [right(a) for a in answers]
        em_full = rights[last]
        ems = tuple(map(rights.__getitem__, stops))
    else:
        em_full = None
        ems = (None,) * k_taus
    # a wrong full answer: stopping early costs no EM (as far as the label is trusted)
    shrink = 1.0 - min(1.0, max(0.0, ex.weight)) if em_full == 0 else 1.0
    lost = [d * shrink for d in differs]
    loss = tuple(map(lost.__getitem__, stops))
    served = lost[k_s]
    return Counterfactual(taus, loss, cost, ems, ipw, served, em_full, True, labelled, disagree, ids, pair_w)
