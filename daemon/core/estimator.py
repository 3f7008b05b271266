"""Per-context, recency-weighted upper bounds on L(tau) and estimates of
T(tau), from labelled and unlabelled runs alike.

Two kinds of evidence per context (see :mod:`.counterfactual`):

* DIRECT, from complete runs (Horvitz-Thompson weight ``w``):
  ``W = sum d w``, ``W2 = sum (d w)^2``, ``SZ[i] = sum d w Z_i`` (``Z`` the
  per-run loss surrogate: the disagreement ``D``, or the loss ``L`` once a
  label refines it) and ``ST[i] = sum d w T_i``;
* PAIRWISE, from EVERY run (cut short or not): for ``i < j``,
  ``SE[i, j] = sum d v_j 1{a_i != a_j}`` with ``VW[j] = sum d v_j`` and
  ``VW2[j] = sum (d v_j)^2`` (``v_j``: HT weight of observing tau_j's stop).

Recency: each example of a context multiplies all of that context's sums by
``decay = 0.5 ** (1 / half_life)`` (``half_life`` in examples). Updates are
buffered per context and applied in one numpy pass (:meth:`Estimator.flush`)
before any read. A label that arrives after its run's unlabelled evidence
replaces ``D`` by ``Z`` in place: ``SZ += d^age w (Z - D)``, ``age`` = the
context's examples since (:meth:`Estimator.refine`).

Bounds (:meth:`Estimator.stats`), at a reference tau ``r`` (the threshold
served now), with ``delta = 1 - confidence`` split in three (Bonferroni):

* ``U_dir(i)``: one-sided Clopper-Pearson bound at ``1 - delta/3`` on the
  direct mean (Kish ``n_eff = W^2 / W2``, effective count
  ``mean * n_eff``), shrunk toward the River model's prior (``prior_strength``
  pseudo-examples) for data-poor contexts; ``U_dir(1.0) = 0`` exactly;
* ``U_pair(i, r)``: the same bound on ``E(min(i,r), max(i,r))``;
* ``U(i) = min(U_dir(i), U_pair(i, r) + U_dir(r))``, valid at
  ``confidence`` for each fixed tau and reference, since
  ``L(tau) <= 1{a_tau != a_r} + L(r)`` on every run. The ``source`` of each
  bound says which term won: ``direct`` (complete runs: labels where they
  came, disagreement elsewhere), ``pair`` (served traffic, relative to
  ``r``) or ``exact`` (tau = 1.0).

>>> est = Estimator(taus=(0.5, 0.9, 1.0), half_life=1e9, confidence=0.95)
>>> from stopwise.daemon.core.counterfactual import Counterfactual
>>> cf = Counterfactual((0.5, 0.9, 1.0), (0.0, 0.0, 0.0), (0.3, 0.6, 1.0), (1, 1, 1), 1.0, 0.0, 1, True,
...                     True, (0, 0, 0), (0, 0, 0), (1.0, 1.0, 1.0))
>>> for _ in range(300): _ = est.update("*", cf)
>>> st = est.stats("*")
>>> round(st.n_eff), st.loss[0], round(st.ucb[0], 4), round(st.savings(0.5), 2), st.source
(300, 0.0, 0.0136, 0.7, ('direct', 'direct', 'exact'))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import betaincinv

from .counterfactual import Counterfactual

FLUSH_AT = 512
"""Buffered examples per context before an update pass runs anyway."""


@dataclass(frozen=True, slots=True)
class TauStats:
    """A context's estimates, aligned with ``taus`` (ascending, with 1.0)."""

    taus: tuple[float, ...]
    loss: tuple[float, ...]        # point estimate behind the bound (with the prior, if any)
    ucb: tuple[float, ...]         # upper bound on L(tau) at the configured confidence
    cost: tuple[float, ...]        # estimate of T(tau) (1.0 when unknown)
    n_eff: float                   # Kish effective complete runs (no prior)
    n_examples: int                # every example learned
    n_informative: int             # complete runs learned
    prior: tuple[float, ...] | None = None
    n_evidence: float = 0.0        # recency-decayed count of examples
    source: tuple[str, ...] = ()   # per tau: "direct" | "pair" | "exact"
    ref: float = 1.0               # the reference tau of the pairwise bounds
    n_pair: float = 0.0            # Kish effective runs observing the reference's stop

    def index(self, tau: float) -> int:
        for i, t in enumerate(self.taus):
            if abs(t - tau) < 1e-12:
                return i
        raise KeyError(tau)

    def nearest(self, tau: float) -> int:
        """Index of the most aggressive grid tau that is >= ``tau``."""
        for i, t in enumerate(self.taus):
            if t >= tau - 1e-12:
                return i
        return len(self.taus) - 1

    def savings(self, tau: float) -> float:
        return 1.0 - self.cost[self.nearest(tau)]


class _Acc:
    """One context's sums (see the module doc) and its update buffer."""

    __slots__ = ("n", "ni", "c", "w", "w2", "sz", "st", "vw", "vw2", "se", "buf", "flushed")

    def __init__(self, k: int) -> None:
        self.n = 0            # examples learned (the recency clock)
        self.ni = 0           # complete runs learned
        self.c = 0.0          # decayed count of examples
        self.w = 0.0
        self.w2 = 0.0
        self.sz = np.zeros(k)
        self.st = np.zeros(k)
        self.vw = np.zeros(k)
        self.vw2 = np.zeros(k)
        self.se = np.zeros((k, k))
        self.buf: list = []   # (ids, pair_w, weight, loss, cost) not yet applied
        self.flushed = 0      # self.n at the last flush

    def __getstate__(self):
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state):
        for s in self.__slots__:
            setattr(self, s, state[s])


def cp_upper_vec(k: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """Vectorised one-sided Clopper-Pearson upper bound (1 where ``n <= 0``
    or ``k >= n``), see :func:`.bounds.cp_upper`.

    >>> [round(float(x), 5) for x in cp_upper_vec(np.array([0.0, 5.0]), np.array([300.0, 100.0]), 0.95)]
    [0.00994, 0.10225]
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    ok = (n > 0) & (k < n) & np.isfinite(k) & np.isfinite(n)
    kk = np.where(ok, np.clip(k, 0.0, None), 0.0)
    nn = np.where(ok, n, 1.0)
    out = betaincinv(kk + 1.0, np.maximum(nn - kk, 1e-12), confidence)
    return np.where(ok, out, 1.0)


class Estimator:
    """See the module doc. Deterministic and picklable."""

    def __init__(self, taus: Sequence[float], half_life: float, confidence: float, prior_strength: float = 0.0) -> None:
        self.taus = tuple(taus)
        self._acc: dict[str, _Acc] = {}
        self.reconfigure(half_life, confidence, prior_strength)

    def reconfigure(self, half_life: float, confidence: float, prior_strength: float = 0.0) -> None:
        """New recency, confidence and prior settings (the sums so far are kept)."""
        for acc in self._acc.values():
            self._flush(acc)   # buffered examples decay at the old rate
        self.half_life = float(half_life)
        self.confidence = float(confidence)
        self.prior_strength = float(prior_strength)
        self.decay = 0.5 ** (1.0 / self.half_life)

    def keys(self) -> list[str]:
        return sorted(self._acc)

    def __contains__(self, key: str) -> bool:
        return key in self._acc

    def touch(self, key: str) -> None:
        if key not in self._acc:
            self._acc[key] = _Acc(len(self.taus))

    def update(self, key: str, cf: Counterfactual) -> tuple[int, ...]:
        return self.update_many((key,), cf)

    def update_many(self, keys: Sequence[str], cf: Counterfactual) -> tuple[int, ...]:
        """Learn ``cf`` for each of ``keys`` (a context and its ancestors);
        return each key's clock stamp (for a later :meth:`refine`)."""
        accs = self._acc
        k = len(self.taus)
        row = (cf.ids or (-1,) * k, cf.pair_w or (0.0,) * k, cf.weight,
               cf.loss if cf.weight > 0 else None, cf.cost if cf.weight > 0 else None)
        stamps = []
        for key in keys:
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = _Acc(k)
            acc.n += 1
            if cf.complete:
                acc.ni += 1
            acc.buf.append(row)
            stamps.append(acc.n)
            if len(acc.buf) >= FLUSH_AT:
                self._flush(acc)
        return tuple(stamps)

    def refine(self, keys: Sequence[str], stamps: Sequence[int], weight: float,
               delta: Sequence[float]) -> None:
        """Add ``weight * (Z - D)`` (``delta``) to the direct sums of the
        run learned at ``stamps`` (its label arrived), at its decayed weight."""
        if weight <= 0 or not any(delta):
            return
        dz = np.asarray(delta, dtype=float) * weight
        for key, stamp in zip(keys, stamps):
            acc = self._acc.get(key)
            if acc is None or stamp > acc.n:
                continue
            if stamp > acc.flushed:   # the run is still buffered: apply it first
                self._flush(acc)
            acc.sz += dz * self.decay ** (acc.flushed - stamp)   # the sums stand at clock ``flushed``

    def _flush(self, acc: _Acc) -> None:
        rows = acc.buf
        m = len(rows)
        if not m:
            return
        d = self.decay
        f = d ** np.arange(m - 1, -1, -1, dtype=float)   # each row's weight now
        dm = d ** m
        ids = np.array([r[0] for r in rows], dtype=np.int32)
        fv = np.array([r[1] for r in rows], dtype=float) * f[:, None]
        acc.vw = acc.vw * dm + fv.sum(0)
        acc.vw2 = acc.vw2 * (dm * dm) + (fv * fv).sum(0)
        diff = ids[:, :, None] != ids[:, None, :]
        acc.se = acc.se * dm + np.einsum("tij,tj->ij", diff, fv)
        acc.c = acc.c * dm + float(f.sum())
        full = [(t, r) for t, r in enumerate(rows) if r[2] > 0]
        acc.sz *= dm
        acc.st *= dm
        acc.w *= dm
        acc.w2 *= dm * dm
        if full:
            fw = np.array([f[t] * r[2] for t, r in full])
            acc.w += float(fw.sum())
            acc.w2 += float((fw * fw).sum())
            acc.sz += fw @ np.array([r[3] for _, r in full], dtype=float)
            acc.st += fw @ np.array([r[4] for _, r in full], dtype=float)
        acc.buf = []
        acc.flushed = acc.n

    def flush(self) -> None:
        """Apply every buffered update (before a read or a snapshot)."""
        for acc in self._acc.values():
            self._flush(acc)

    def n_evidence(self, key: str) -> float:
        acc = self._acc.get(key)
        if acc is None:
            return 0.0
        self._flush(acc)
        return acc.c

    def n_eff(self, key: str) -> float:
        acc = self._acc.get(key)
        if acc is None:
            return 0.0
        self._flush(acc)
        return acc.w * acc.w / acc.w2 if acc.w2 > 0 else 0.0

    def stats(self, key: str, prior: Sequence[float] | None = None, ref: float = 1.0) -> TauStats:
        """Estimates and bounds for ``key`` relative to the reference tau
        ``ref`` (the threshold served now); zeros with bound 1 for an unknown key."""
        k = len(self.taus)
        acc = self._acc.get(key)
        if acc is None:
            acc = _Acc(k)
        self._flush(acc)
        top = k - 1
        r = next((i for i, t in enumerate(self.taus) if t >= ref - 1e-12), top)
        # Bonferroni over the three bounds: U_dir(i), U_pair(i, r), U_dir(r) (always
        # three, so a move of the reference does not move the confidence)
        conf = 1.0 - (1.0 - self.confidence) / 3.0
        n_eff = acc.w * acc.w / acc.w2 if acc.w2 > 0 else 0.0
        mean = acc.sz / acc.w if acc.w > 0 else np.zeros(k)
        s = self.prior_strength if prior is not None else 0.0
        p0 = np.asarray(prior, dtype=float) if prior is not None else np.zeros(k)
        kk = mean * n_eff + s * p0
        nn = n_eff + s
        loss_dir = kk / nn if nn > 0 else np.zeros(k)
        ucb_dir = cp_upper_vec(kk, np.full(k, nn), conf)
        loss_dir[top] = ucb_dir[top] = 0.0
        # pairwise bounds relative to the reference r
        lo = np.minimum(np.arange(k), r)
        hi = np.maximum(np.arange(k), r)
        vw, vw2 = acc.vw[hi], acc.vw2[hi]
        n_pair = np.where(vw2 > 0, vw * vw / np.where(vw2 > 0, vw2, 1.0), 0.0)
        m_pair = np.where(vw > 0, acc.se[lo, hi] / np.where(vw > 0, vw, 1.0), 0.0)
        ucb_pair = cp_upper_vec(m_pair * n_pair, n_pair, conf) + ucb_dir[r]
        use_pair = ucb_pair < ucb_dir - 1e-12
        use_pair[r] = False
        ucb = np.where(use_pair, ucb_pair, ucb_dir)
        loss = np.where(use_pair, m_pair + loss_dir[r], loss_dir)
        source = tuple("exact" if i == top else ("pair" if use_pair[i] else "direct") for i in range(k))
        cost = acc.st / acc.w if acc.w > 0 else np.ones(k)
        return TauStats(self.taus, tuple(map(float, loss)), tuple(map(float, np.minimum(ucb, 1.0))),
                        tuple(map(float, cost)), float(n_eff), acc.n, acc.ni,
                        tuple(map(float, prior)) if prior is not None else None, float(acc.c), source,
                        float(self.taus[r]), float(n_pair[r]))
