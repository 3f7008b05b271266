"""Labelled examples per second through the pure core, on one core.

Builds N labelled examples from the synthetic three-context traffic
(thresholds per context as a converged daemon would serve them, 10%
exploration; or ``--cold``: everything served 1.0, every run complete, the
most expensive case for the model), serialises them as the examples topic would carry them, then
measures in the same run:

* baseline: decoding the same bytes (``LabelledExample.from_bytes``);
* core: ``Controller.learn`` on the decoded examples plus a ``tick`` every
  ``--tick-every`` examples;
* decode + core: both, as the examples-topic consumer does.

Prints a markdown table; ``--out FILE`` also writes it.

    /tmp/venv/bin/python bench/bench_core.py --n 20000
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

from stopwise.daemon.config import Config
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.engine import Controller
from stopwise.daemon.core.examples import LabelledExample, from_events
from stopwise.sim.traces import THREE_CONTEXTS

from _traffic import served_events


def build(n: int, seed: int, cold: bool = False) -> list[bytes]:
    cfg = Config()
    keyer = ContextKeyer(cfg.context.dimensions)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        inf, fb = served_events(rng, i, "b", i * 0.001, profile=rng.choice(THREE_CONTEXTS),
                                threshold=1.0 if cold else None, explore_rate=0.2 if cold else 0.1)
        out.append(from_events(inf, fb, keyer).to_bytes())
    return out


def run(blobs: list[bytes], tick_every: int, repeat: int) -> dict[str, float]:
    cfg = Config()
    best = {"decode": 0.0, "core": 0.0, "decode+core": 0.0}
    for _ in range(repeat):
        t = time.perf_counter()
        exs = [LabelledExample.from_bytes(b) for b in blobs]
        best["decode"] = max(best["decode"], len(blobs) / (time.perf_counter() - t))

        ctl = Controller(cfg)
        t = time.perf_counter()
        for i, ex in enumerate(exs):
            ctl.learn(ex, i * 0.001)
            if i % tick_every == 0:
                ctl.tick(i * 0.001)
        best["core"] = max(best["core"], len(exs) / (time.perf_counter() - t))

        ctl = Controller(cfg)
        t = time.perf_counter()
        for i, b in enumerate(blobs):
            ctl.learn(LabelledExample.from_bytes(b), i * 0.001)
            if i % tick_every == 0:
                ctl.tick(i * 0.001)
        best["decode+core"] = max(best["decode+core"], len(blobs) / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--tick-every", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cold", action="store_true",
                    help="cold start: every request served 1.0, so every run is complete (model learns every example)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})   # one core
    blobs = build(args.n, args.seed, args.cold)
    res = run(blobs, args.tick_every, args.repeat)
    base = res["decode"]
    lines = [
        f"Pure core, {args.n} labelled examples (3 contexts, "
        f"{'cold start: all served 1.0, all complete' if args.cold else 'converged thresholds, 10% exploration'}), "
        f"tick every {args.tick_every}, "
        f"best of {args.repeat}, one core, Python {platform.python_version()}",
        "",
        "| stage | examples/s | ratio to decode baseline |",
        "|---|---:|---:|",
    ]
    for name in ("decode", "core", "decode+core"):
        lines.append(f"| {name} | {res[name]:,.0f} | {res[name] / base:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
