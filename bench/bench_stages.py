"""Per-request cost of each stage of the daemon's path, without Kafka: decode
the inference and feedback records, join them, encode the example into an
examples-topic batch, decode it back, learn it. The same code the shell
runs, on ``--n`` requests of the three synthetic contexts, with the GC
settings of ``stopwise run``; median over ``--repeat`` passes (each pass a
fresh Joiner and Controller).

    /tmp/venv/bin/python bench/bench_stages.py --n 20000 --repeat 3

Add the kafka-python fetch of the 2 input records (what the bare consumer of
bench_daemon.py does) to get the per-request total of one daemon process.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from stopwise.daemon.config import parse_config
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.engine import Controller
from stopwise.daemon.core.examples import decode_examples, encode_examples
from stopwise.daemon.core.join import Joiner
from stopwise.daemon.records import decode_feedback, decode_inference
from stopwise.daemon.shell.processing import EXAMPLES_PER_RECORD
from stopwise.daemon.shell.runner import tune_gc

from _traffic import served_events

STAGES = ("decode inference", "decode feedback", "join", "encode example batch", "decode example batch", "learn")


def one_pass(infs: list[bytes], fbs: list[bytes], now: float) -> dict[str, float]:
    cfg = parse_config({}, file="<bench>")
    t: dict[str, float] = {}
    c0 = time.perf_counter()
    di = [decode_inference(b) for b in infs]
    c1 = time.perf_counter()
    df = [decode_feedback(b) for b in fbs]
    c2 = time.perf_counter()
    joiner = Joiner(3600, len(infs) + 1, ContextKeyer(cfg.context.dimensions))
    exs = []
    for a, b in zip(di, df):
        joiner.add_inference(a, now)
        exs.extend(joiner.add_feedback(b, now))
    c3 = time.perf_counter()
    blobs = [encode_examples(exs[i:i + EXAMPLES_PER_RECORD]) for i in range(0, len(exs), EXAMPLES_PER_RECORD)]
    c4 = time.perf_counter()
    back = [e for blob in blobs for e in decode_examples(blob)[0]]
    c5 = time.perf_counter()
    ctl = Controller(cfg)
    for i, ex in enumerate(back):
        ctl.learn(ex, now)
        if i % 2000 == 1999:
            ctl.tick(now)
    c6 = time.perf_counter()
    assert len(back) == len(infs)
    for name, a, b in zip(STAGES, (c0, c1, c2, c3, c4, c5), (c1, c2, c3, c4, c5, c6)):
        t[name] = (b - a) / len(infs) * 1e6
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = random.Random(1)
    now = time.time()
    infs, fbs = [], []
    for i in range(args.n):
        inf, fb = served_events(rng, i, "b", now)
        infs.append(inf.to_bytes())
        fbs.append(fb.to_bytes())
    tune_gc()
    passes = [one_pass(infs, fbs, now) for _ in range(args.repeat)]
    med = {s: statistics.median(p[s] for p in passes) for s in STAGES}
    lines = [f"Daemon stages without Kafka: {args.n} requests, median of {args.repeat} passes, us per request", "",
             "| stage | us per request | per pass |", "|---|---:|---|",
             *[f"| {s} | {med[s]:.1f} | {' '.join(f'{p[s]:.1f}' for p in passes)} |" for s in STAGES],
             f"| total | {sum(med.values()):.1f} | |"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
