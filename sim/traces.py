"""Synthetic full-run traces with known, per-context risk curves.

A :class:`ContextProfile` describes one kind of traffic: how often the full
run is right (``p_correct``), how early the answer settles (``settle``) and
how trustworthy the stopping scores are (``calibration``). Each generated
request carries its FULL run (every checkpoint) and its gold answer hash;
:func:`to_events` then plays an inferencer with the shared stopping rule
(:mod:`stopwise.daemon.stoprule`) and returns the inference and feedback
events a real client would emit.

How a trace is drawn (per request):

* the full run is correct with probability ``p_correct``; its final answer
  is the gold hash, else a wrong hash;
* the answer settles (equals the final answer from then on) at checkpoint
  ``S``, drawn around ``settle * (n_checkpoints - 1)``; before ``S`` the
  answer is the final one with probability ``lucky`` and otherwise a
  different (wrong) candidate;
* scores rise across checkpoints. A settled checkpoint scores high and keeps
  rising. An unsettled checkpoint scores low (``<= 0.8``) except, with
  probability ``1 - calibration``, a spuriously confident score in
  ``[0.85, 0.995)``: the lower the calibration, the more often a high score
  comes with an answer that still changes (the "risky" context).

>>> import random
>>> easy, middle, risky = THREE_CONTEXTS
>>> req = make_request(random.Random(0), easy, "r-1", ts=10.0)
>>> len(req.checkpoints), req.checkpoints[-1][0]
(8, 256)
>>> inf, fb = to_events(req, threshold=1.0, explore_rate=0.0)
>>> inf.stop_index == len(req.checkpoints) - 1, inf.complete, fb.em in (0, 1)
(True, True, True)
>>> curve = true_loss_curve(risky, [0.8, 0.99], n=2000)
>>> curve[0.8] > curve[0.99]
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from stopwise.daemon.core.counterfactual import stop_indices
from stopwise.daemon.records import FeedbackEvent, InferenceEvent
from stopwise.daemon.stoprule import NO_EARLY_STOP, explores, propensity, stop_index

Checkpoint = tuple[int, float, str]


@dataclass(frozen=True)
class ContextProfile:
    """One kind of traffic with a known risk curve.

    ``context``: raw context dims; ``p_correct``: P(the full run's answer is
    correct); ``calibration``: in [0, 1], P(an unsettled checkpoint does NOT
    get a spuriously high score) -- high means trustworthy scores;
    ``settle``: mean fraction of the run after which the answer is final;
    ``lucky``: P(an unsettled answer already equals the final one);
    ``n_checkpoints``, ``tokens_per_checkpoint``: the run's shape;
    ``weight``: traffic share; ``features``: numeric features attached to
    each request (a small jitter is added per request).
    """

    context: dict[str, str]
    p_correct: float
    calibration: float
    n_checkpoints: int = 8
    tokens_per_checkpoint: int = 32
    weight: float = 1.0
    settle: float = 0.5
    lucky: float = 0.2
    features: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TraceRequest:
    """A request with its full latent run."""

    request_id: str
    ts: float
    context: dict[str, str]
    features: dict[str, float]
    checkpoints: tuple[Checkpoint, ...]
    gold_answer_hash: str

    @property
    def full_correct(self) -> bool:
        return self.checkpoints[-1][2] == self.gold_answer_hash


def make_request(rng: random.Random, profile: ContextProfile, request_id: str, ts: float) -> TraceRequest:
    """Draw one full run for ``profile`` (deterministic given ``rng``'s state)."""
    n = profile.n_checkpoints
    gold = f"g-{request_id}"
    correct = rng.random() < profile.p_correct
    final = gold if correct else f"w-{request_id}"
    centre = profile.settle * (n - 1)
    settle_at = int(round(min(n - 1, max(0.0, rng.gauss(centre, max(0.5, n / 6.0))))))
    cps: list[Checkpoint] = []
    prev = 0.0
    for k in range(n):
        progress = k / max(1, n - 1)
        if k >= settle_at:
            answer = final
            since = k - settle_at
            score = 1.0 - (1.0 - rng.uniform(0.82, 0.96)) * (0.6 ** since)
        else:
            answer = final if rng.random() < profile.lucky else f"a{k % 3}-{request_id}"
            if rng.random() >= profile.calibration:
                score = rng.uniform(0.85, 0.995)
            else:
                score = min(0.8, rng.uniform(0.1, 0.45) + 0.35 * progress)
        if k >= settle_at:
            score = max(score, min(0.999, prev + 0.01))
        score = round(min(0.999, max(0.0, score)), 4)
        prev = score
        cps.append(((k + 1) * profile.tokens_per_checkpoint, score, answer))
    feats = {name: round(value + rng.uniform(-0.05, 0.05), 4) for name, value in profile.features.items()}
    return TraceRequest(request_id, ts, dict(profile.context), feats, tuple(cps), gold)


def true_curves(profile: ContextProfile, taus: Iterable[float], n: int = 20000, seed: int = 0) -> dict[float, tuple[float, float]]:
    """Monte-Carlo ``(L(tau), T(tau))`` per tau (1.0 included if asked)."""
    rng = random.Random(seed)
    taus = list(taus)
    loss = {t: 0 for t in taus}
    cost = {t: 0.0 for t in taus}
    for i in range(n):
        req = make_request(rng, profile, f"mc{i}", 0.0)
        cps = req.checkpoints
        for t, k in zip(taus, stop_indices(cps, taus)):
            loss[t] += int(req.full_correct and cps[k][2] != cps[-1][2])
            cost[t] += cps[k][0] / cps[-1][0]
    return {t: (loss[t] / n, cost[t] / n) for t in taus}


def true_loss_curve(profile: ContextProfile, taus: Iterable[float], n: int = 20000, seed: int = 0) -> dict[float, float]:
    """Monte-Carlo L(tau): P(full answer correct AND the tau-stop answer differs)."""
    return {t: lc[0] for t, lc in true_curves(profile, taus, n, seed).items()}


def true_cost_curve(profile: ContextProfile, taus: Iterable[float], n: int = 20000, seed: int = 0) -> dict[float, float]:
    """Monte-Carlo T(tau): tokens at the tau-stop point / tokens of the full run."""
    return {t: lc[1] for t, lc in true_curves(profile, taus, n, seed).items()}


def best_threshold(profile: ContextProfile, taus: Sequence[float], budget: float, n: int = 20000, seed: int = 0) -> float:
    """The oracle: lowest tau whose true L stays under ``budget`` for it and
    every more conservative tau (1.0 if none)."""
    curve = true_loss_curve(profile, taus, n, seed)
    best = NO_EARLY_STOP
    for t in sorted(taus, reverse=True):
        if curve[t] > budget:
            break
        best = t
    return best


def to_events(req: TraceRequest, threshold: float, explore_rate: float, threshold_version: int = 0,
              *, feedback_delay: float = 1.0, with_gold: bool = False) -> tuple[InferenceEvent, FeedbackEvent]:
    """Play the inferencer: apply ``threshold`` (unless the request explores,
    then run to the end and deliver the full answer), log the propensity,
    and grade the delivered answer against gold (``em``). ``with_gold`` also
    reports the gold hash in the feedback."""
    full = req.checkpoints
    explored = explores(req.request_id, explore_rate)
    if explored:
        cps = full
        k = len(full) - 1
    else:
        k = stop_index(full, threshold)
        cps = full[: k + 1]
    complete = len(cps) == len(full)
    tokens_budget = full[-1][0]
    inf = InferenceEvent(
        request_id=req.request_id, ts=req.ts, context=dict(req.context), features=dict(req.features),
        threshold=threshold, threshold_version=threshold_version, explore=explored,
        propensity=propensity(explored, explore_rate), stop_index=k, tokens_used=cps[k][0],
        tokens_budget=tokens_budget, checkpoints=[list(cp) for cp in cps], complete=complete,
    )
    fb = FeedbackEvent(
        request_id=req.request_id, ts=req.ts + feedback_delay, em=int(cps[k][2] == req.gold_answer_hash),
        gold_answer_hash=req.gold_answer_hash if with_gold else None, source="sim",
    )
    return inf, fb


THREE_CONTEXTS: tuple[ContextProfile, ...] = (
    # aggressive-friendly: the answer settles early and scores are trustworthy
    ContextProfile({"task": "extract", "domain": "general"}, p_correct=0.9, calibration=0.998, settle=0.2,
                   weight=1.0, features={"difficulty": 0.2}),
    # middle
    ContextProfile({"task": "qa", "domain": "finance"}, p_correct=0.8, calibration=0.99, settle=0.35,
                   weight=1.0, features={"difficulty": 0.5}),
    # risky: high scores still come with answers that change
    ContextProfile({"task": "math", "domain": "science"}, p_correct=0.7, calibration=0.96, settle=0.5,
                   weight=1.0, features={"difficulty": 0.8}),
)
"""Three profiles whose risk curves clearly differ (easy, middle, risky)."""


def traffic(rng: random.Random, profiles: Sequence[ContextProfile], n: int, start_ts: float = 0.0,
            rate: float = 100.0, prefix: str = "r") -> list[TraceRequest]:
    """``n`` requests mixed by profile ``weight``, ``rate`` requests/s."""
    weights = [p.weight for p in profiles]
    out = []
    for i in range(n):
        prof = rng.choices(profiles, weights)[0]
        out.append(make_request(rng, prof, f"{prefix}{i}", start_ts + i / rate))
    return out
