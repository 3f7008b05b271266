"""Helpers for the core tests: a small config, hand-built events and a closed loop."""

from __future__ import annotations

import random
from typing import Sequence

from stopwise.daemon.config import Config, parse_config
from stopwise.daemon.context import ContextKeyer, parents
from stopwise.daemon.core.examples import LabelledExample
from stopwise.daemon.records import FeedbackEvent, InferenceEvent
from stopwise.daemon.stoprule import stop_index
from stopwise.sim.traces import ContextProfile, make_request, to_events


def small_cfg(**sections: dict) -> Config:
    """The default config with ``context.min_support`` 0 (a context is learned
    under its own key from its first example), ``sections`` merged per section on top."""
    return parse_config({"context": {"min_support": 0}, **sections})


def inference(rid: str = "r1", ts: float = 0.0, *, cps=((10, 0.5, "a"), (20, 0.9, "b"), (30, 0.95, "b")),
              threshold: float = 1.0, explore: bool = False, propensity: float = 1.0,
              context: dict | None = None, stop: int | None = None, complete: bool | None = None) -> InferenceEvent:
    cps = [list(c) for c in cps]
    k = len(cps) - 1 if stop is None else stop
    return InferenceEvent(request_id=rid, ts=ts, context=context or {"task": "qa"}, threshold=threshold,
                          explore=explore, propensity=propensity, stop_index=k, tokens_used=cps[k][0],
                          tokens_budget=cps[-1][0], checkpoints=cps, complete=complete)


def feedback(rid: str = "r1", ts: float = 1.0, em: int | None = 1, gold: str | None = None) -> FeedbackEvent:
    return FeedbackEvent(request_id=rid, ts=ts, em=em, gold_answer_hash=gold)


def example(cps, *, threshold: float = 1.0, explore: bool = False, propensity: float = 1.0, complete: bool = True,
            em: int | None = 1, gold: str | None = None, rid: str = "r", key: str = "task=qa",
            weight: float = 1.0) -> LabelledExample:
    cps = tuple(tuple(c) for c in cps)
    stop = len(cps) - 1
    return LabelledExample(rid, {"task": key.split("=")[-1]}, key, {}, 0.0, threshold, 0, explore, propensity,
                           complete, stop, cps, cps[-1][0], em, gold, weight, 1.0)


def random_example(rng: random.Random, i: int, unlabelled: float = 0.25) -> LabelledExample:
    """A random run, complete or cut at its served threshold, labelled (EM,
    gold hash, both, with a random trust) or, with probability ``unlabelled``, not."""
    n = rng.randint(1, 9)
    tokens = 0 if rng.random() < 0.05 else rng.randint(1, 5)
    cps = []
    for _ in range(n):
        cps.append((tokens, rng.choice((0.0, 0.5, 0.9, 0.95, 1.0, round(rng.random(), 3))), rng.choice("abc")))
        tokens += rng.randint(1, 20)
    complete = rng.random() < 0.6
    threshold = rng.choice((0.5, 0.9, 0.93, 1.0, round(rng.random(), 2)))
    if not complete:  # censored: checkpoints end at the first crossing of the served threshold
        k = stop_index(cps, threshold)
        cps = cps[:k + 1]
    stop = len(cps) - 1 if complete and rng.random() < 0.7 else rng.randrange(len(cps))
    if not complete:
        stop = len(cps) - 1
    gold = rng.choice((None, None, "a", "b", "z"))
    em = None if gold is not None and rng.random() < 0.5 else rng.choice((0, 1))
    weight = rng.choice((1.0, 2.0, 0.3, 0.5))
    if rng.random() < unlabelled:
        em, gold, weight = None, None, 1.0
    return LabelledExample(f"r{i}", {"task": "qa"}, "task=qa", {}, 0.0, threshold, 0, rng.random() < 0.3,
                           rng.choice((1.0, 0.2, 0.05, 1e-6)), complete, stop, tuple(cps), tokens, em, gold,
                           weight, 1.0)


class Loop:
    """Plays inferencers against a Core or Controller: each request applies
    the published threshold of its context (falling back to parents), the
    events go through the core, a tick runs every ``tick_every`` requests.
    Tracks the realized loss and savings of served traffic per context."""

    def __init__(self, core, config: Config, profiles: Sequence[ContextProfile], seed: int = 1) -> None:
        self.core = core
        self.config = config
        self.profiles = list(profiles)
        self.rng = random.Random(seed)
        self.keyer = ContextKeyer(config.context.dimensions)
        self.table: dict = {}
        self.i = 0
        self.served: dict[str, list] = {}
        self.decisions: list = []
        self.thresholds: dict[str, list[float]] = {}

    def lookup(self, ctx):
        for k in parents(self.keyer.key(ctx)):
            if k in self.table:
                return self.table[k]
        return None

    def run(self, n: int, tick_every: int = 250, measure: bool = True, dt: float = 0.01) -> None:
        for _ in range(n):
            i = self.i
            self.i += 1
            now = i * dt
            prof = self.rng.choices(self.profiles, [p.weight for p in self.profiles])[0]
            req = make_request(self.rng, prof, f"r{i}", now)
            rec = self.lookup(req.context)
            thr = rec.threshold if rec else self.config.context.default_threshold
            rate = rec.explore_rate if rec else self.config.exploration.initial_rate
            inf, fb = to_events(req, thr, rate, rec.version if rec else 0)
            if measure:
                full = req.checkpoints
                k = stop_index(full, thr)  # what non-explored traffic gets under thr
                s = self.served.setdefault(self.keyer.key(req.context), [0, 0, 0.0])
                s[0] += 1
                s[1] += int(req.full_correct and full[k][2] != full[-1][2])
                s[2] += 1.0 - full[k][0] / full[-1][0]
                self.thresholds.setdefault(self.keyer.key(req.context), []).append(thr)
            self.core.on_inference(inf, now)
            self.core.on_feedback(fb, now + dt / 2)
            if self.i % tick_every == 0:
                for d in self.core.tick(now):
                    self.table[d.record.context] = d.record
                    self.decisions.append(d)

    def median_threshold(self, key: str) -> float:
        vals = sorted(self.thresholds[key])
        return vals[len(vals) // 2]

    def drop(self, key: str) -> float:
        s = self.served[key]
        return s[1] / s[0]

    def savings(self, key: str) -> float:
        s = self.served[key]
        return s[2] / s[0]
