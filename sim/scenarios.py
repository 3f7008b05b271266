"""Scenario world generators, built on :mod:`stopwise.sim.traces`.

Every scenario is deterministic in ``(seed, n)`` and writes a world file plus
a ``FILE.meta.json`` sidecar naming the scenario and its events (drift
points, the new context, ...), which the simulator's summary uses to measure
recovery. Arrivals are ``RATE`` requests per second of event time. The
production-like worlds (``prod_*``) are built by :mod:`.production`.

>>> reqs, meta = build("cold_start", seed=1, n=300)
>>> len(reqs), meta["events"][0]["kind"], meta["events"][0]["context"]
(300, 'cold_start', 'task=code|domain=software')
>>> sorted(SCENARIOS)[:3]
['abrupt_drift', 'cold_start', 'delayed_feedback']
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .production import KEYER, PRODUCTION, RATE, build_production
from .traces import THREE_CONTEXTS, ContextProfile, TraceRequest, make_request
from .world import write_world

FEEDBACK_DELAY_S = 5.0        # mean feedback delay (exponential)
EASY, MIDDLE, RISKY = THREE_CONTEXTS
NEW_CONTEXT = ContextProfile({"task": "code", "domain": "software"}, p_correct=0.85, calibration=0.985,
                             settle=0.3, features={"difficulty": 0.35})
DRIFTED_CALIBRATION = 0.85    # the middle context after a "model update": far more overconfident scores

Row = dict
Meta = dict


def _stream(rng: random.Random, n: int, pick: Callable[[int], ContextProfile], prefix: str) -> Iterator[TraceRequest]:
    for i in range(n):
        yield make_request(rng, pick(i), f"{prefix}-{i}", round(i / RATE, 6))


def _chooser(rng: random.Random, profiles: Sequence[ContextProfile], weights: Sequence[float] | None = None):
    w = list(weights) if weights is not None else [p.weight for p in profiles]
    return lambda: rng.choices(profiles, w)[0]


def _row(req: TraceRequest, rng: random.Random, *, present_p: float = 1.0, mean_delay: float = FEEDBACK_DELAY_S,
         noise: float = 0.0) -> Row:
    present = rng.random() < present_p
    delay = round(rng.expovariate(1.0 / mean_delay), 6) if mean_delay > 0 else 0.0
    fb: dict = {"present": present, "delay_s": delay}
    if noise and rng.random() < noise:
        fb["em_override"] = 0 if req.full_correct else 1   # the label is wrong about the full answer
    return {"request_id": req.request_id, "ts": req.ts, "context": req.context, "features": req.features,
            "checkpoints": [list(c) for c in req.checkpoints], "gold_answer_hash": req.gold_answer_hash,
            "feedback": fb}


def _simple(name: str, seed: int, n: int, **fb) -> tuple[list[Row], Meta]:
    rng = random.Random(f"{name}:{seed}")
    choose = _chooser(rng, THREE_CONTEXTS)
    rows = [_row(r, rng, **fb) for r in _stream(rng, n, lambda i: choose(), name)]
    return rows, {"events": []}


def stationary(seed: int, n: int) -> tuple[list[Row], Meta]:
    """Three contexts (easy, middle, risky), equal traffic, all feedback after ~5 s."""
    return _simple("stationary", seed, n)


def abrupt_drift(seed: int, n: int) -> tuple[list[Row], Meta]:
    """At the midpoint the middle context's scores become overconfident
    (its calibration drops to ``DRIFTED_CALIBRATION``), as after a model update."""
    rng = random.Random(f"abrupt_drift:{seed}")
    choose = _chooser(rng, THREE_CONTEXTS)
    drifted = dataclasses.replace(MIDDLE, calibration=DRIFTED_CALIBRATION)
    at = n // 2

    def pick(i: int) -> ContextProfile:
        p = choose()
        return drifted if (p is MIDDLE and i >= at) else p

    rows = [_row(r, rng) for r in _stream(rng, n, pick, "abrupt_drift")]
    ev = {"kind": "abrupt_drift", "context": KEYER.key(MIDDLE.context), "ts": round(at / RATE, 6),
          "request": at, "calibration": [MIDDLE.calibration, DRIFTED_CALIBRATION]}
    return rows, {"events": [ev]}


def gradual_drift(seed: int, n: int) -> tuple[list[Row], Meta]:
    """The middle context's calibration slides linearly down to
    ``DRIFTED_CALIBRATION`` between 1/4 and 3/4 of the stream."""
    rng = random.Random(f"gradual_drift:{seed}")
    choose = _chooser(rng, THREE_CONTEXTS)
    lo, hi = n // 4, (3 * n) // 4
    steps = 20
    variants = [dataclasses.replace(MIDDLE, calibration=round(MIDDLE.calibration + (DRIFTED_CALIBRATION - MIDDLE.calibration) * k / steps, 4))
                for k in range(steps + 1)]

    def pick(i: int) -> ContextProfile:
        p = choose()
        if p is not MIDDLE or i < lo:
            return p
        frac = min(1.0, (i - lo) / max(1, hi - lo))
        return variants[int(round(frac * steps))]

    rows = [_row(r, rng) for r in _stream(rng, n, pick, "gradual_drift")]
    ev = {"kind": "gradual_drift", "context": KEYER.key(MIDDLE.context), "ts": round(lo / RATE, 6),
          "until_ts": round(hi / RATE, 6), "calibration": [MIDDLE.calibration, DRIFTED_CALIBRATION]}
    return rows, {"events": [ev]}


def cold_start(seed: int, n: int) -> tuple[list[Row], Meta]:
    """A fourth context (task=code, domain=software) appears at 1/3 of the stream."""
    rng = random.Random(f"cold_start:{seed}")
    before = _chooser(rng, THREE_CONTEXTS)
    after = _chooser(rng, (*THREE_CONTEXTS, NEW_CONTEXT))
    at = n // 3
    rows = [_row(r, rng) for r in _stream(rng, n, lambda i: before() if i < at else after(), "cold_start")]
    ev = {"kind": "cold_start", "context": KEYER.key(NEW_CONTEXT.context), "ts": round(at / RATE, 6), "request": at}
    return rows, {"events": [ev]}


def mix_shift(seed: int, n: int) -> tuple[list[Row], Meta]:
    """Traffic mix shifts at the midpoint from mostly easy (6:3:1) to mostly risky (1:3:6)."""
    rng = random.Random(f"mix_shift:{seed}")
    a = _chooser(rng, THREE_CONTEXTS, (6, 3, 1))
    b = _chooser(rng, THREE_CONTEXTS, (1, 3, 6))
    at = n // 2
    rows = [_row(r, rng) for r in _stream(rng, n, lambda i: a() if i < at else b(), "mix_shift")]
    ev = {"kind": "mix_shift", "context": None, "ts": round(at / RATE, 6), "weights": [[6, 3, 1], [1, 3, 6]]}
    return rows, {"events": [ev]}


def sparse_feedback(seed: int, n: int) -> tuple[list[Row], Meta]:
    """Only 5% of requests get feedback."""
    return _simple("sparse_feedback", seed, n, present_p=0.05)


def delayed_feedback(seed: int, n: int) -> tuple[list[Row], Meta]:
    """Feedback arrives after ~60 s of event time on average (~6,000 requests later)."""
    return _simple("delayed_feedback", seed, n, mean_delay=60.0)


def noisy_labels(seed: int, n: int) -> tuple[list[Row], Meta]:
    """10% of feedback labels are wrong (``em_override`` contradicts the full answer's truth)."""
    return _simple("noisy_labels", seed, n, noise=0.10)


def digits(seed: int, n: int) -> tuple[list[Row], Meta]:
    """The reference ONNX anytime model run on the real digits data (contexts
    task in {digits, hard} x domain in {clean, noisy})."""
    from stopwise.clients.anytime import digits_traces

    return list(digits_traces(seed, n, start_ts=0.0, rate=RATE)), {"events": []}


SCENARIOS: dict[str, Callable[[int, int], tuple[list[Row], Meta]]] = {
    f.__name__: f for f in (stationary, abrupt_drift, gradual_drift, cold_start, mix_shift,
                            sparse_feedback, delayed_feedback, noisy_labels, digits)
} | {name: functools.partial(build_production, name) for name in PRODUCTION}


def build(name: str, seed: int, n: int) -> tuple[list[Row], Meta]:
    """The rows and meta of scenario ``name``; ValueError lists valid names."""
    fn = SCENARIOS.get(name)
    if fn is None:
        raise ValueError(f"unknown scenario {name!r}; valid: {', '.join(sorted(SCENARIOS))}")
    if n < 1:
        raise ValueError("n must be >= 1")
    rows, meta = fn(seed, n)
    return rows, {"scenario": name, "seed": seed, "n": n, "rate": RATE, **meta}


def generate_world(name: str, seed: int, n: int, out: str | Path) -> tuple[int, Meta]:
    """Write the world file ``out`` and ``out.meta.json``; return (count, meta)."""
    rows, meta = build(name, seed, n)
    count = write_world(rows, out)
    Path(str(out) + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return count, meta

