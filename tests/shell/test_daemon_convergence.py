"""Done-when 1: a closed loop over three contexts with different true risk
curves makes the thresholds topic converge to different per-context
thresholds, each within its budget, the safest context saving the most."""

from __future__ import annotations

import random
import time

from stopwise.daemon.context import ContextKeyer, parents
from stopwise.daemon.records import decode_threshold
from stopwise.daemon.shell.kafka_io import CompactedView, make_reader
from stopwise.sim.traces import THREE_CONTEXTS, to_events, traffic, true_curves

from daemon_helpers import producer_for, send_events, wait_until

BUDGET = 0.05
ROUNDS, PER_ROUND = 14, 400


def test_thresholds_converge_per_context_within_budget(make_config, daemon_thread) -> None:
    cfg = make_config(budget={"em_drop": BUDGET}, publish={"interval_s": 0.2})
    d = daemon_thread(cfg).daemon
    keyer = ContextKeyer(cfg.context.dimensions)
    view = CompactedView(cfg.topics.thresholds, make_reader(cfg))
    producer = producer_for(cfg)
    rng = random.Random(11)
    produced = 0
    served: dict[str, list[int]] = {keyer.key(p.context): [] for p in THREE_CONTEXTS}
    table: dict[str, object] = {}
    try:
        for rnd in range(ROUNDS):
            view.catch_up()
            table = {k.decode(): decode_threshold(v) for k, v in view.latest.items()}
            reqs = traffic(rng, THREE_CONTEXTS, PER_ROUND, start_ts=time.time(), rate=1000.0, prefix=f"r{rnd}-")
            events = []
            for req in reqs:
                ctx = keyer.key(req.context)
                rec = next((table[k] for k in parents(ctx) if k in table), None)
                thr, rate, ver = (rec.threshold, rec.explore_rate, rec.version) if rec else \
                    (cfg.context.default_threshold, cfg.exploration.initial_rate, 0)
                inf, fb = to_events(req, thr, rate, ver)
                events.append((inf, fb))
                if rnd >= ROUNDS // 2:  # realized loss on served traffic, second half
                    delivered = req.checkpoints[inf.stop_index][2]
                    served[ctx].append(int(req.full_correct and delivered != req.checkpoints[-1][2]))
            produced += send_events(producer, cfg, events)
            wait_until(lambda: d.processor.learned >= produced, 90, what=f"round {rnd} to be learned")
            ticks = d.ticks
            wait_until(lambda: d.ticks >= ticks + 2, 30, what="two ticks after learning")
        view.catch_up()
        table = {k.decode(): decode_threshold(v) for k, v in view.latest.items()}
    finally:
        producer.close()
        view.close()

    final = {}
    for profile in THREE_CONTEXTS:
        ctx = keyer.key(profile.context)
        rec = next((table[k] for k in parents(ctx) if k in table), None)
        assert rec is not None, f"no threshold for {ctx}: {sorted(table)}"
        final[ctx] = (profile, rec.threshold)
    thresholds = {ctx: thr for ctx, (_, thr) in final.items()}
    easy, _, risky = (keyer.key(p.context) for p in THREE_CONTEXTS)
    assert len(set(thresholds.values())) >= 2, thresholds
    assert thresholds[easy] < thresholds[risky], thresholds
    costs = {}
    for ctx, (profile, thr) in final.items():
        loss, cost = true_curves(profile, [thr], n=10000, seed=5)[thr]
        costs[ctx] = cost
        assert loss <= BUDGET, f"{ctx}: true L({thr}) = {loss:.4f} > budget {BUDGET}"
        realized = sum(served[ctx]) / max(1, len(served[ctx]))
        assert realized <= BUDGET + 0.02, f"{ctx}: realized EM drop {realized:.4f} on served traffic"
    print("converged", thresholds, costs)
    assert min(costs, key=costs.get) == easy, (thresholds, costs)
    assert costs[easy] < 1.0, "the easiest context should stop early"
