"""The benchmarks' synthetic traffic: the three contexts of
``stopwise.sim.traces`` served at the thresholds a converged daemon would
publish for them. Imported by the sibling scripts (``python bench/x.py``
puts ``bench/`` on ``sys.path``)."""

from __future__ import annotations

import random

from stopwise.daemon.records import FeedbackEvent, InferenceEvent
from stopwise.sim.traces import THREE_CONTEXTS, ContextProfile, make_request, to_events

SERVED = {"extract": 0.7, "qa": 0.93, "math": 0.99}


def served_events(rng: random.Random, i: int, prefix: str, ts: float, *, profile: ContextProfile | None = None,
                  threshold: float | None = None, explore_rate: float = 0.1) -> tuple[InferenceEvent, FeedbackEvent]:
    """Request ``i`` (id ``f"{prefix}{i}"``, drawn from ``rng``) of ``profile``
    (default: the three contexts in turn) as its inference and feedback
    events, served at ``threshold`` (default: ``SERVED`` for its task) with
    ``explore_rate``."""
    req = make_request(rng, THREE_CONTEXTS[i % 3] if profile is None else profile, f"{prefix}{i}", ts)
    return to_events(req, SERVED[req.context["task"]] if threshold is None else threshold, explore_rate)
