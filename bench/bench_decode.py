"""Record decode speed: decode_inference (parse + validate) vs. a plain
json.loads of the same bytes, in the same run.

    /tmp/venv/bin/python bench/bench_decode.py [--n 20000] [--repeats 7] [--out bench/results/decode.md]

Prints a markdown table: records/s (median of the repeats) and the ratio to
the json.loads baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from stopwise.daemon.records import InferenceEvent, decode_feedback, decode_inference


def typical_inference(rng: random.Random, i: int, checkpoints: int = 16) -> bytes:
    """An inference event of typical size: 16 checkpoints, 2 context dims, 4 features."""
    tokens, cps = 0, []
    for _ in range(checkpoints):
        tokens += rng.randint(8, 64)
        cps.append([tokens, round(rng.random(), 4), f"{rng.getrandbits(64):016x}"])
    return json.dumps({
        "v": 1, "request_id": f"req-{i:08d}-{rng.getrandbits(32):08x}", "ts": 1_700_000_000 + i * 0.01,
        "context": {"task": rng.choice(["qa", "math", "code"]), "domain": rng.choice(["finance", "health", "web"])},
        "features": {"prompt_len": float(rng.randint(10, 900)), "temp": 0.7, "load": rng.random(), "prior": rng.random()},
        "threshold": 0.9, "threshold_version": 12, "explore": True, "propensity": 0.1,
        "stop_index": rng.randrange(checkpoints), "tokens_used": tokens, "tokens_budget": 2048, "checkpoints": cps,
    }).encode()


def typical_feedback(rng: random.Random, i: int) -> bytes:
    return json.dumps({"v": 1, "request_id": f"req-{i:08d}", "ts": 1_700_000_000 + i * 0.01,
                       "em": rng.randint(0, 1), "source": "grader", "weight": 1.0}).encode()


def rates(fns: dict[str, Callable[[bytes], object]], data: list[bytes], repeats: int) -> dict[str, float]:
    """Median records/s of each decoder over ``repeats`` passes. Passes are
    interleaved (A B C, A B C, ...) so load on a shared machine hits every
    decoder alike; one warm-up pass first."""
    for fn in fns.values():
        for raw in data[: min(len(data), 1000)]:
            fn(raw)
    speeds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for raw in data:
                fn(raw)
            speeds[name].append(len(data) / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in speeds.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="records per pass")
    ap.add_argument("--repeats", type=int, default=7, help="timed passes (median reported)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)

    load0 = os.getloadavg()
    rng = random.Random(7)
    inf = [typical_inference(rng, i) for i in range(args.n)]
    fb = [typical_feedback(rng, i) for i in range(args.n)]
    avg_inf = statistics.mean(len(b) for b in inf)
    avg_fb = statistics.mean(len(b) for b in fb)

    r_inf = rates({"json.loads (baseline)": json.loads, "decode_inference": decode_inference,
                   "json.loads + model_validate": lambda b: InferenceEvent.model_validate(json.loads(b))},
                  inf, args.repeats)
    r_fb = rates({"json.loads (baseline)": json.loads, "decode_feedback": decode_feedback}, fb, args.repeats)
    base_inf, base_fb = r_inf["json.loads (baseline)"], r_fb["json.loads (baseline)"]
    rows = [("inference", f"{avg_inf:.0f}", k, v) for k, v in r_inf.items()]
    rows += [("feedback", f"{avg_fb:.0f}", k, v) for k, v in r_fb.items()]
    lines = [
        f"records per pass: {args.n}, median of {args.repeats} passes; python {platform.python_version()} "
        f"on {platform.machine()}, {os.cpu_count()} cores, load average at start "
        f"{load0[0]:.1f} / end {os.getloadavg()[0]:.1f} (a shared machine: compare ratios, not absolutes)",
        "",
        "| record | avg bytes | decoder | records/s | ratio vs json.loads |",
        "|---|---:|---|---:|---:|",
    ]
    for record, size, name, r in rows:
        base = base_inf if record == "inference" else base_fb
        lines.append(f"| {record} | {size} | {name} | {r:,.0f} | {r / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = "/tmp/venv/bin/python bench/bench_decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.out.write_text(f"# Record decode speed\n\nCommand: `{cmd.strip()}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
