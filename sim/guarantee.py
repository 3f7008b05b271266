"""Checks the published guarantee on closed-form worlds (issue 9 item 3):
"at any FIXED time, for each context, P(the true L(tau) of the threshold in
force exceeds the context's EM budget) <= 1 - confidence".

A trial is one (world, fixed time, context): the threshold in force for the
context at that time (:func:`in_force`, read from the simulator's
``thresholds`` list exactly as the simulated inferencer looks it up), its
TRUE loss from :func:`~.closed_form.true_loss`, and whether that exceeds the
budget. :func:`verdict` compares the violation count with the one-sided
binomial tolerance ``binom.ppf(level, trials, 1 - confidence)``: under the
guarantee (and independent trials) more violations than that happen with
probability at most ``1 - level``.

>>> rec = {"version": 1, "issued_at": 5.0, "visible_at": 6.0, "expires_at": 99.0}
>>> recs = [{**rec, "context": "task=a", "threshold": 0.9}, {**rec, "context": "*", "threshold": 0.95}]
>>> in_force(recs, "task=a", 5.5), in_force(recs, "task=a", 6.0), in_force(recs, "task=b", 7.0)
(1.0, 0.9, 0.95)
>>> in_force(recs, "task=a", 99.0)   # both expired: the default
1.0
>>> from .closed_form import CONTEXTS
>>> recs = [{**rec, "context": "task=cf-edge", "threshold": 0.9}]
>>> [(t.context, t.threshold, round(t.true_loss, 4), t.violated) for t in trials_of(1, recs, CONTEXTS[1:], [10.0], 0.01)]
[('task=cf-mid', 1.0, 0.0, False), ('task=cf-edge', 0.9, 0.011, True)]
>>> v = verdict(violations=9, trials=100, confidence=0.95)
>>> v.allowed, v.ok, verdict(violations=14, trials=100, confidence=0.95).ok
(13, True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Iterable, Mapping, Sequence

from scipy.stats import binom

from stopwise.daemon.lookup import in_force as record_in_force

from .closed_form import ClosedContext, context_key, true_loss


def in_force(thresholds: Sequence[Mapping], key: str, t: float, default: float = 1.0) -> float:
    """The threshold a request of context ``key`` gets at time ``t``: the
    records visible by ``t`` (``visible_at <= t``) applied in publication
    order as :meth:`~.simulator.ThresholdTable.apply` applies them, then the
    shared lookup (:func:`stopwise.daemon.lookup.in_force`: the fallback
    chain of ``key``, expired records skipped), else ``default``."""
    latest: dict[str, Mapping] = {}
    for r in thresholds:
        if r["visible_at"] > t:
            continue
        cur = latest.get(r["context"])
        if cur is None or r["version"] >= cur["version"] or r["issued_at"] >= cur["issued_at"]:
            latest[r["context"]] = r
    rec = record_in_force({k: SimpleNamespace(**r) for k, r in latest.items()}, key, t)
    return float(default if rec is None else rec.threshold)


def censor_feedback_after(requests: Sequence, t: float) -> list:
    """``requests`` with every feedback that would arrive after ``t`` turned
    into "no feedback". The simulator is causal in event time, so nothing it
    publishes up to ``t`` changes; it only skips the long drain of late
    feedback after the stream (a speed-up for trials at times <= ``t``).

    >>> from .closed_form import build_closed_world
    >>> world = build_closed_world(seed=1, n=1000)
    >>> late = censor_feedback_after(world, 10.0)
    >>> sum(r.feedback.present for r in world) > sum(r.feedback.present for r in late) > 0
    True
    >>> all(r.ts + r.feedback.delay_s <= 10.0 for r in late if r.feedback.present)
    True
    """
    out = []
    for r in requests:
        fb = r.feedback
        if fb.present and r.ts + fb.delay_s > t:
            r = r.model_copy(update={"feedback": fb.model_copy(update={"present": False, "delay_s": 0.0})})
        out.append(r)
    return out


@dataclass(frozen=True)
class Trial:
    world: int
    time: float
    context: str
    threshold: float
    true_loss: float
    violated: bool


def trials_of(world: int, thresholds: Sequence[Mapping], contexts: Iterable[ClosedContext], times: Iterable[float],
              budget: float, default: float = 1.0) -> list[Trial]:
    """One :class:`Trial` per (time, context) of one simulated world."""
    out = []
    for t in times:
        for c in contexts:
            tau = in_force(thresholds, context_key(c), t, default)
            loss = true_loss(c, tau)
            out.append(Trial(world, t, context_key(c), tau, loss, loss > budget))
    return out


@dataclass(frozen=True)
class Verdict:
    violations: int
    trials: int
    delta: float          # 1 - confidence: the violation probability the guarantee allows
    level: float
    allowed: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", int(binom.ppf(self.level, self.trials, self.delta)))

    @property
    def rate(self) -> float:
        return self.violations / self.trials if self.trials else 0.0

    @property
    def tolerance(self) -> float:
        """The largest violation rate the check accepts."""
        return self.allowed / self.trials if self.trials else 0.0

    @property
    def ok(self) -> bool:
        return self.violations <= self.allowed

    def __str__(self) -> str:
        return (f"{self.violations}/{self.trials} violations ({self.rate:.3f}); allowed <= {self.allowed} "
                f"({self.tolerance:.3f} = binom.ppf({self.level}, {self.trials}, {self.delta:g}) / trials)")


def verdict(violations: int, trials: int, confidence: float, level: float = 0.999) -> Verdict:
    """The check of ``violations`` out of ``trials`` against ``1 - confidence``."""
    if trials <= 0:
        raise ValueError("guarantee check: no trials")
    return Verdict(int(violations), int(trials), round(1.0 - confidence, 12), level)


def summarize(trials: Sequence[Trial], confidence: float, level: float = 0.999) -> dict:
    """Pooled verdict, the share of trials below 1.0, and per (context, time)
    cells (each cell's trials come from independent worlds; their verdicts
    use ``level`` Bonferroni-split over the cells)."""
    cells: dict[tuple[str, float], list[Trial]] = {}
    for tr in trials:
        cells.setdefault((tr.context, tr.time), []).append(tr)
    cell_level = 1.0 - (1.0 - level) / max(1, len(cells))
    per_cell = {k: verdict(sum(t.violated for t in v), len(v), confidence, cell_level) for k, v in sorted(cells.items())}
    below = {k: sum(t.threshold < 1.0 for t in v) / len(v) for k, v in sorted(cells.items())}
    return {"pooled": verdict(sum(t.violated for t in trials), len(trials), confidence, level),
            "below_1": sum(t.threshold < 1.0 for t in trials) / len(trials) if trials else 0.0,
            "cells": per_cell, "cells_below_1": below}
