"""Simulator speed: requests simulated per second of wall time, per policy,
against a baseline measured in the same run (reading + parsing the world file).

    /tmp/venv/bin/python bench/bench_sim.py [--n 20000] [--repeat 3] [--write]

Prints a markdown table; ``--write`` also puts it into bench/results/sim.md
(section ``<!-- sim:speed -->``). Target: >= 20,000 requests/s on one core for
the reference policy (the simulate loop itself: world already parsed, oracle
excluded). With ``--profile`` prints the top functions of one reference run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import platform
import sys
import tempfile
import time
from pathlib import Path

from stopwise.daemon.config import Config
from stopwise.sim.oracle import compute_oracle
from stopwise.sim.scenarios import generate_world
from stopwise.sim.simulator import simulate
from stopwise.sim.world import read_world

ROOT = Path(__file__).resolve().parents[1]


class NullCore:
    """Accepts events and never publishes: measures the simulator's own loop."""

    def on_inference(self, ev, now):
        return []

    def on_feedback(self, ev, now):
        return []

    def tick(self, now):
        return []


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--policies", default="reference,none,naive,offline")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    cfg = Config()
    with tempfile.TemporaryDirectory() as d:
        world = Path(d) / "stationary.jsonl"
        generate_world("stationary", seed=7, n=a.n, out=world)
        reqs, _ = read_world(world)
        base = best_of(lambda: read_world(world), a.repeat)
    rows = [("read + parse world (baseline)", base)]
    rows.append(("simulator loop alone (no-op core)",
                 min(simulate(reqs, cfg, core=NullCore()).elapsed_s for _ in range(a.repeat))))
    rows.append(("oracle", best_of(lambda: compute_oracle(reqs, cfg, window=1000), a.repeat)))
    for pol in a.policies.split(","):
        rows.append((f"simulate `{pol}`", min(simulate(reqs, cfg, pol).elapsed_s for _ in range(a.repeat))))
    # where the time goes: the same reference run without the River risk model
    nomodel = cfg.model_copy(update={"estimator": cfg.estimator.model_copy(update={"model": "none"})})
    rows.append(("simulate `reference`, estimator.model=none",
                 min(simulate(reqs, nomodel, "reference").elapsed_s for _ in range(a.repeat))))
    lines = [f"n = {a.n} requests (stationary, seed 7), best of {a.repeat}; Python {platform.python_version()}, "
             f"{platform.machine()}, one process (shared 2-core machine).", "",
             "| step | seconds | requests/s | x baseline speed |", "|---|---|---|---|"]
    for name, t in rows:
        lines.append(f"| {name} | {t:.3f} | {a.n / t:,.0f} | {base / t:.2f} |")
    ref = dict(rows).get("simulate `reference`")
    if ref:
        lines += ["", f"Reference policy: {a.n / ref:,.0f} requests/s vs target 20,000 -> "
                      f"{'PASS' if a.n / ref >= 20000 else 'MISS'}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.profile:
        pr = cProfile.Profile()
        pr.enable()
        simulate(reqs, cfg, "reference")
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(18)
        print(s.getvalue())
    if a.write:
        from stopwise.sim.matrix import replace_section

        out = ROOT / "bench" / "results" / "sim.md"
        cmd = "/tmp/venv/bin/python bench/bench_sim.py " + " ".join(sys.argv[1:])
        body = f"## Simulator speed\n\nCommand: `{cmd}`\n\n{text}"
        out.write_text(replace_section(out.read_text() if out.exists() else "# Simulator results\n", "speed", body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
