"""Done-when: the closed loop on a real broker.

The ONNX fleet starts at the conservative default (threshold 1.0: every
request runs all exits), the in-process daemon learns from its inference and
feedback events and publishes thresholds, the fleet picks them up, its tokens
per request fall by a measured amount while its EM drop vs. full runs stays
within the budget, and the contexts end at different thresholds.
"""

from __future__ import annotations

import signal
import subprocess
import time

from stopwise.clients.inferencer import Fleet, FleetStats

from daemon_helpers import DaemonProcess, wait_until, write_config

BUDGET = 0.02
CONTEXTS = [{"task": t, "domain": d} for t in ("digits", "hard") for d in ("clean", "noisy")]


def stop_daemon(proc: DaemonProcess) -> None:
    if proc.alive():
        proc.signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_closed_loop_onnx_fleet_saves_tokens_within_budget(make_config, daemon_process, tmp_path):
    cfg = make_config(budget={"em_drop": BUDGET, "confidence": 0.9}, guardrails={"min_evidence": 100.0})
    fleet = Fleet(cfg, workers=3, rate=150.0, seed=11, feedback_delay=0.5, feedback_missing=0.05,
                  stats_interval_s=1.0)
    proc = None
    fleet.start()
    try:
        # 1. before the daemon publishes anything: the conservative default, full compute
        assert fleet.table.wait_ready(30)
        wait_until(lambda: fleet.served >= 200, 30, what="200 requests served")
        before = fleet.stats.summary()["all"]
        assert before["requests"] >= 200
        assert before["mean_threshold"] == 1.0 and before["token_ratio"] == 1.0

        # 2. the daemon closes the loop; wait until every context has its own record
        #    and the fleet's compute has fallen (poll, bounded)
        #    (``stopwise run`` as its own process: its own GIL, like production)
        proc = daemon_process(write_config(cfg, tmp_path / "daemon.yaml"))
        fleet.stats = FleetStats(window_s=5.0)
        t_daemon = time.monotonic()
        deadline = t_daemon + 75
        converged = False
        while time.monotonic() < deadline and not converged:
            time.sleep(1.0)
            recs = [fleet.table.get(c) for c in CONTEXTS]
            tl = fleet.stats.timeline
            converged = (all(r is not None and r.context.count("|") == 1 for r in recs)
                         and len({r.threshold for r in recs}) >= 2
                         and bool(tl) and _ratio(tl[-1]) < 0.8)
        assert proc.alive(), proc.log_file.read_text()[-3000:]
        assert converged, (f"no convergence: table={dict(fleet.table.table)} timeline={fleet.stats.timeline[-1:]}\n"
                           f"daemon log tail:\n{proc.log_file.read_text()[-3000:]}")

        t_converged = time.monotonic() - t_daemon

        # 3. measure the converged fleet
        fleet.stats = FleetStats(window_s=60.0)
        time.sleep(8.0)
        after = fleet.stats.summary()
    finally:
        result = fleet.stop()
        if proc is not None:
            stop_daemon(proc)

    total = after["all"]
    assert total["requests"] >= 500
    # tokens per request fell by a measured amount (from 100% of the full run)
    assert total["token_ratio"] < 0.8, total
    # EM drop vs. full runs within the budget, on the served traffic
    assert total["em_drop"] <= BUDGET, after
    # contexts end at different thresholds, all below the conservative default
    final = {c["task"] + "/" + c["domain"]: fleet.table.get(c).threshold for c in CONTEXTS}
    assert len(set(final.values())) >= 2 and max(final.values()) < 1.0, final
    assert fleet.table.rejected == 0 and result["errors"] == 0
    print(f"\nclosed loop: converged in {t_converged:.0f} s; tokens/full {before['token_ratio']:.3f} -> {total['token_ratio']:.3f}, "
          f"EM drop {total['em_drop']:+.4f} (budget {BUDGET}), thresholds {final}")


def _ratio(window: dict) -> float:
    ctx = window["contexts"].values()
    tokens = sum(r["mean_tokens"] * r["requests"] for r in ctx)
    full = sum(r["mean_tokens_full"] * r["requests"] for r in ctx)
    return tokens / max(full, 1.0)
