"""The same core everywhere (issue 9, item 6): for one event stream, the
daemon on the real broker and the simulator's core publish the same
thresholds, within one grid step, for every context.

The stream is fixed in advance (trace requests played at fixed thresholds
per context with 30% exploration, half of them with feedback), so it does
not depend on the feedback loop. The daemon (in-process, three examples
partitions = three learn shards) consumes it from the input topics at wall
clock speed; the simulator's core (``Core``, built as ``simulate`` builds it,
same config) gets the same events in event-time order with a tick every
``publish.interval_s`` of event time. Tick times differ, so what is compared
is the FINAL threshold per context: the daemon's after everything is learned
and several ticks passed, read from the thresholds topic; the core's after
its last event and ten more ticks.

The six leaf contexts are chosen so that the composition shows: their
parents and ``*`` hash to shards that learn only some (or none) of their
children, so a simulator with one Controller would publish other contexts
and other thresholds (asserted, so the stream keeps telling the two apart).

Two path-dependent parts of the control loop are switched off in the shared
config, because they would make the final threshold depend on WHEN ticks
happen (wall clock vs event time), not on the composition this test is
about: the pooled River prior (refreshed only while a context is data-poor,
then kept at whatever value it had at that tick) and the policy's integral
correction (its clipping makes it depend on how observations are batched
between ticks); the circuit breaker is out of reach for the same reason
(its cooldown is in seconds of each side's clock).
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import time

from stopwise.daemon.config import Config
from stopwise.daemon.core.engine import Core
from stopwise.daemon.records import decode_threshold
from stopwise.sim.simulator import build_policy
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

from daemon_helpers import DaemonThread, producer_for, read_topic, send_events, wait_until

EASY, MIDDLE, RISKY = THREE_CONTEXTS
# (task, domain, profile, threshold the stream was served at); with 3 examples
# partitions, owners: qa/finance 0, qa/med 1, qa/science 2, extract/general 0,
# extract/legal 2, math/science 1; task=qa 1, task=extract 0, task=math 0, '*' 2
STREAM = [("qa", "finance", MIDDLE, 0.93), ("qa", "med", EASY, 0.9), ("qa", "science", RISKY, 0.97),
          ("extract", "general", EASY, 0.85), ("extract", "legal", MIDDLE, 0.93), ("math", "science", RISKY, 0.97)]
PER_CONTEXT = 700
EXPLORE = 0.3
T0 = 1_000_000.0
RATE = 200.0            # requests per second of event time
FEEDBACK_DELAY = 2.0    # seconds of event time
SECTIONS = {"topics": {"examples_partitions": 3},
            "budget": {"em_drop": 0.05, "confidence": 0.9},
            "estimator": {"model": "none"},
            "policy": {"integral_gain": 0.0},
            "guardrails": {"breaker_margin": 1.0}}


def event_stream(seed: int = 5) -> list[tuple]:
    """(inference, feedback or None) per request, deterministic."""
    rng = random.Random(seed)
    out = []
    for i in range(PER_CONTEXT * len(STREAM)):
        task, domain, profile, thr = STREAM[i % len(STREAM)]
        req = make_request(rng, dataclasses.replace(profile, context={"task": task, "domain": domain}),
                           f"q{i}", T0 + i / RATE)
        inf, fb = to_events(req, thr, EXPLORE, 1, feedback_delay=FEEDBACK_DELAY)
        out.append((inf, fb if rng.random() < 0.5 else None))
    return out


def simulator_thresholds(cfg: Config, events: list[tuple]) -> dict[str, float]:
    """Final threshold per context of the simulator's core fed ``events`` in
    event time, ticking every ``publish.interval_s`` as ``simulate`` does."""
    core = Core(cfg, policy=build_policy(cfg.policy.name, cfg))
    timeline = sorted([(inf.ts, 0, inf) for inf, _ in events] + [(fb.ts, 1, fb) for _, fb in events if fb],
                      key=lambda x: (x[0], x[1]))
    interval = cfg.publish.interval_s
    next_tick = timeline[0][0] + interval
    for ts, kind, ev in timeline:
        while next_tick <= ts:
            core.tick(next_tick)
            next_tick += interval
        (core.on_inference if kind == 0 else core.on_feedback)(ev, ts)
    for _ in range(10):
        core.tick(next_tick)
        next_tick += interval
    return {k: r.threshold for k, r in core.controller.table().items()}


def grid_steps(cfg: Config, a: float, b: float) -> float:
    """How many grid steps apart ``a`` and ``b`` are (a step-clamped
    threshold may lie between grid points: positions are interpolated)."""
    grid = [*cfg.grid.taus, 1.0]

    def pos(x: float) -> float:
        i = max(0, min(len(grid) - 2, bisect.bisect_right(grid, x) - 1))
        return i + (x - grid[i]) / (grid[i + 1] - grid[i])

    return abs(pos(a) - pos(b))


def daemon_thresholds(cfg: Config) -> dict[str, float]:
    return {r.key.decode(): decode_threshold(r.value).threshold for r in read_topic(cfg, cfg.topics.thresholds)
            if r.value is not None}


def test_daemon_and_simulator_publish_the_same_thresholds(make_config):
    cfg = make_config(**SECTIONS)
    events = event_stream()
    n_in = len(events) + sum(fb is not None for _, fb in events)

    t0 = time.monotonic()
    sim = simulator_thresholds(cfg, events)
    sim_s = time.monotonic() - t0
    single = simulator_thresholds(cfg.model_copy(update={"topics": cfg.topics.model_copy(
        update={"examples_partitions": 1})}), events)

    d = DaemonThread(cfg).start()
    try:
        producer = producer_for(cfg)
        try:
            send_events(producer, cfg, events)
        finally:
            producer.close()
        p = d.daemon.processor
        # everything consumed: both inputs, and every examples record read back by its learn shard
        wait_until(lambda: p.consumed >= n_in + p.example_records, 45,
                   what=lambda: f"the stream to be consumed ({p.consumed} of {n_in} + {p.example_records})")
        previous = None
        for _ in range(5):  # then ticks until the published table stops changing
            ticks = d.daemon.ticks
            wait_until(lambda: d.daemon.ticks >= ticks + 3, 20, what="three more daemon ticks")
            table = daemon_thresholds(cfg)
            if table == previous:
                break
            previous = table
    finally:
        d.stop()

    assert set(table) == set(sim), f"contexts differ: daemon {sorted(table)} vs simulator {sorted(sim)}"
    far = {k: (table[k], sim[k]) for k in table if grid_steps(cfg, table[k], sim[k]) > 1 + 1e-9}
    assert not far, f"more than one grid step apart (daemon, simulator): {far}\ndaemon {table}\nsimulator {sim}"
    # the stream tells the compositions apart: one Controller would publish something else
    assert set(single) != set(sim) or any(grid_steps(cfg, single[k], sim[k]) > 1 for k in sim), (single, sim)
    print(f"\nsame core: {len(table)} contexts, daemon {table}, simulator core {sim} ({sim_s:.1f} s)")
