"""Worlds that look like production (issue 9): six contexts with different
score calibrations, heavy-tailed convergence, answers that flip after
converging, stable-and-wrong confident answers, runs of varying length, and
feedback for 100%, 30%, 5% or none of the requests.

How one request of a :class:`ProdProfile` is drawn (all from one seeded rng):

* the run has ``n`` checkpoints, ``n`` uniform in ``checkpoints``, and each
  step adds a uniform number of tokens in ``step_tokens`` (runs differ in
  length and in tokens);
* **stable and wrong** (probability ``p_stable_wrong``): the answer is wrong,
  settled from checkpoint 0 or 1, and scores high (near ``cap``) throughout;
* otherwise the full answer is correct with probability ``p_correct`` and
  settles at a **heavy-tailed** point: fraction ``settle_min + settle_scale
  * (Pareto(alpha) - 1)`` of the run, capped at the last checkpoint (with a
  small ``alpha`` a sizeable share converges only at the very end);
* **flip after converging** (probability ``p_flip``, when at least two
  checkpoints follow the settle point): an earlier answer holds a settled
  stretch of >= 2 checkpoints with settled-looking scores (up to
  ``flip_cap``), then the answer changes to the final one; the earlier
  answer is wrong when the final is right, else the gold one half the time;
* scores: a settled checkpoint scores from ``settled`` rising toward ``cap``
  (``decay`` per checkpoint); an unsettled one scores low (``<= low_max``)
  except, per checkpoint with probability ``spurious``, a confident score in
  ``spurious_range``. No score ever exceeds ``cap``.

Why the stable-and-wrong answers matter (and what they do not do): the loss
is L(tau) = 1{full right and the tau answer differs}; such a run's full
answer is wrong, so L = 0 at every tau (stopping early costs no EM), and it
never changes, so the label-free disagreement D(tau) = 1{tau answer differs
from the full one} is 0 too: they neither cost EM nor loosen the
label-free bound. They lower the full run's EM (a quality floor no
threshold can fix) and punish any rule that reads "confident and stable"
as "correct". What DOES separate D from L is a run whose full answer is
wrong AND changes (D = 1, L = 0): contexts with a low ``p_correct`` or
frequent flips from a gold early answer have a loose label-free bound, and
there labels tighten it.

>>> rows, meta = build_production("prod_30", seed=1, n=2000)
>>> len(rows), meta["events"], round(sum(r["feedback"]["present"] for r in rows) / len(rows), 1)
(2000, [], 0.3)
>>> sorted(PRODUCTION)
['prod_0', 'prod_30', 'prod_5', 'prod_drift', 'prod_full']
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from stopwise.daemon.context import ContextKeyer

from .traces import Checkpoint, TraceRequest

RATE = 100.0                  # requests per second of event time (every scenario)
KEYER = ContextKeyer(("task", "domain"))


@dataclass(frozen=True)
class ProdProfile:
    """One production-like context (see the module doc for the draw)."""

    context: dict[str, str]
    weight: float
    p_correct: float
    cap: float = 0.999
    settled: tuple[float, float] = (0.75, 0.95)
    decay: float = 0.6
    low_max: float = 0.7
    spurious: float = 0.01
    spurious_range: tuple[float, float] = (0.8, 0.999)
    settle_min: float = 0.1
    settle_scale: float = 0.15
    alpha: float = 1.5
    p_flip: float = 0.003
    flip_cap: float = 0.999
    p_stable_wrong: float = 0.02
    checkpoints: tuple[int, int] = (6, 14)
    step_tokens: tuple[int, int] = (16, 48)
    features: dict[str, float] = field(default_factory=dict)


def _ctx(task: str, domain: str) -> dict[str, str]:
    return {"task": task, "domain": domain}


PROFILES: tuple[ProdProfile, ...] = (
    # well calibrated, settles early
    ProdProfile(_ctx("extract", "general"), 0.20, p_correct=0.92, features={"difficulty": 0.2}),
    # scores never reach 0.95 (cap 0.93): static 0.95 never stops early here
    ProdProfile(_ctx("summarize", "legal"), 0.20, p_correct=0.85, cap=0.93, settled=(0.78, 0.88), low_max=0.6,
                spurious=0.01, spurious_range=(0.75, 0.93), flip_cap=0.93, features={"difficulty": 0.4}),
    # underconfident: low scores even when settled (cap 0.9, slow rise)
    ProdProfile(_ctx("classify", "support"), 0.18, p_correct=0.9, cap=0.9, settled=(0.55, 0.7), decay=0.8,
                low_max=0.4, spurious=0.005, spurious_range=(0.5, 0.85), flip_cap=0.85, features={"difficulty": 0.3}),
    # overconfident: unsettled checkpoints often score high while the answer still changes
    ProdProfile(_ctx("math", "science"), 0.12, p_correct=0.7, settled=(0.9, 0.97), low_max=0.8, spurious=0.15,
                spurious_range=(0.88, 0.999), p_flip=0.01, flip_cap=0.99, p_stable_wrong=0.05,
                features={"difficulty": 0.8}),
    # heavy-tailed convergence: many runs settle late or only at the end
    ProdProfile(_ctx("code", "software"), 0.16, p_correct=0.8, cap=0.995, alpha=1.05, settle_scale=0.3,
                spurious=0.02, checkpoints=(8, 20), features={"difficulty": 0.6}),
    # flips after converging, and confident stable wrong answers
    ProdProfile(_ctx("qa", "finance"), 0.14, p_correct=0.8, cap=0.995, p_flip=0.03, flip_cap=0.97,
                p_stable_wrong=0.12, spurious=0.02, features={"difficulty": 0.5}),
)
"""Six contexts; traffic shares 20/20/18/12/16/14%."""

DRIFT_CONTEXT = PROFILES[0]
DRIFTED = dataclasses.replace(DRIFT_CONTEXT, spurious=0.12, spurious_range=(0.88, 0.999), p_flip=0.03)
"""The drifting context after a "model update": overconfident, flips more."""


def _score_settled(p: ProdProfile, since: int, start: float, cap: float) -> float:
    return cap - (cap - start) * (p.decay ** since)


def make_prod_request(rng: random.Random, p: ProdProfile, request_id: str, ts: float) -> TraceRequest:
    """Draw one request of ``p`` (deterministic given ``rng``'s state).

    >>> req = make_prod_request(random.Random(0), PROFILES[1], "r1", 0.0)
    >>> max(s for _, s, _ in req.checkpoints) < 0.95, req.checkpoints[0][0] < req.checkpoints[-1][0]
    (True, True)
    """
    n = rng.randint(*p.checkpoints)
    gold = f"g-{request_id}"
    start = rng.uniform(*p.settled)
    flip_at = early = None
    stretch_cap = p.cap
    if rng.random() < p.p_stable_wrong:
        final = f"w-{request_id}"
        settle_at = rng.randint(0, 1)
        start = rng.uniform(max(p.settled[1], p.cap - 0.05), p.cap)
    else:
        final = gold if rng.random() < p.p_correct else f"w-{request_id}"
        frac = p.settle_min + p.settle_scale * (rng.paretovariate(p.alpha) - 1.0)
        settle_at = min(n - 1, int(round(min(1.0, frac) * (n - 1))))
        if settle_at <= n - 3 and rng.random() < p.p_flip:
            flip_at = rng.randint(settle_at + 2, n - 1)
            stretch_cap = rng.uniform(min(start, p.flip_cap), p.flip_cap)
            early = f"f-{request_id}" if final == gold or rng.random() < 0.5 else gold
    cps: list[Checkpoint] = []
    tokens = 0
    prev = 0.0
    for k in range(n):
        tokens += rng.randint(*p.step_tokens)
        progress = k / max(1, n - 1)
        if k < settle_at:
            answer = f"a{k % 3}-{request_id}"
            if rng.random() < p.spurious:
                lo, hi = p.spurious_range
                score = hi - (hi - lo) * rng.random() ** 0.5   # density falling linearly to 0 at hi
            else:
                score = min(p.low_max, rng.uniform(0.05, 0.35) + 0.3 * progress)
        elif flip_at is not None and k < flip_at:
            answer = early
            score = max(_score_settled(p, k - settle_at, min(start, stretch_cap), stretch_cap), prev)
        else:
            answer = final
            since = k - (flip_at if flip_at is not None else settle_at)
            score = _score_settled(p, since, start, p.cap)
            if since > 0:
                score = max(score, prev)
        score = round(min(p.cap, max(0.0, score)), 4)
        prev = score
        cps.append((tokens, score, answer))
    feats = {name: round(value + rng.uniform(-0.05, 0.05), 4) for name, value in p.features.items()}
    return TraceRequest(request_id, ts, dict(p.context), feats, tuple(cps), gold)


def _feedback(rng: random.Random, present_p: float, mean_delay: float) -> dict:
    present = rng.random() < present_p
    return {"present": present, "delay_s": round(rng.expovariate(1.0 / mean_delay), 6) if present else 0.0}


@dataclass(frozen=True)
class Variant:
    """Feedback share and mean (exponential) delay; ``drift``: one context's
    calibration changes abruptly at the midpoint."""

    present_p: float
    mean_delay: float
    drift: bool = False


PRODUCTION: dict[str, Variant] = {
    "prod_full": Variant(1.0, 5.0),
    "prod_30": Variant(0.30, 45.0),
    "prod_5": Variant(0.05, 45.0),
    "prod_0": Variant(0.0, 45.0),
    "prod_drift": Variant(0.30, 45.0, drift=True),
}
"""The production-like scenarios; the four stationary ones share the same
request stream for a seed (only their feedback differs)."""


def build_production(name: str, seed: int, n: int) -> tuple[list[dict], dict]:
    """Rows and meta (``events``) of production scenario ``name``."""
    v = PRODUCTION[name]
    runs = random.Random(f"prod:{seed}")            # the request stream (shared by the stationary variants)
    fbr = random.Random(f"{name}:feedback:{seed}")  # who answers, and when
    weights = [p.weight for p in PROFILES]
    at = n // 2
    rows = []
    for i in range(n):
        p = runs.choices(PROFILES, weights)[0]
        if v.drift and i >= at and p is DRIFT_CONTEXT:
            p = DRIFTED
        req = make_prod_request(runs, p, f"prod-{i}", round(i / RATE, 6))
        rows.append({"request_id": req.request_id, "ts": req.ts, "context": req.context, "features": req.features,
                     "checkpoints": [list(c) for c in req.checkpoints], "gold_answer_hash": req.gold_answer_hash,
                     "feedback": _feedback(fbr, v.present_p, v.mean_delay)})
    events = []
    if v.drift:
        events.append({"kind": "abrupt_drift", "context": KEYER.key(DRIFT_CONTEXT.context), "ts": round(at / RATE, 6),
                       "request": at, "spurious": [DRIFT_CONTEXT.spurious, DRIFTED.spurious],
                       "p_flip": [DRIFT_CONTEXT.p_flip, DRIFTED.p_flip]})
    return rows, {"events": events}
