"""The demo's PNG: per context, over time, the threshold the fleet served,
its tokens per request vs. the full run, and its EM drop vs. full runs
(with the budget), from an inferencer ``--stats-file``.

Run: ``python -m stopwise.clients.demo_plot STATS.json OUT.png [--budget 0.02]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def series(stats: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per context: t (s since start, window end), threshold, token_ratio, em_drop, cumulative em_drop.

    >>> s = series({"started_at": 0.0, "timeline": [{"t0": 0.0, "t1": 5.0, "contexts": {"a": {
    ...     "mean_threshold": 1.0, "token_ratio": 1.0, "em_drop": 0.0, "requests": 10, "em": 0.9, "em_full": 0.9}}}]})
    >>> s["a"]["t"], s["a"]["threshold"], s["a"]["cum_em_drop"]
    ([5.0], [1.0], [0.0])
    """
    start = stats.get("started_at") or (stats["timeline"][0]["t0"] if stats.get("timeline") else 0.0)
    out: dict[str, dict[str, list[float]]] = {}
    cum: dict[str, list[float]] = {}
    for w in stats.get("timeline", []):
        for key, row in w["contexts"].items():
            s = out.setdefault(key, {"t": [], "threshold": [], "token_ratio": [], "em_drop": [], "cum_em_drop": []})
            c = cum.setdefault(key, [0.0, 0.0])
            c[0] += row["em_drop"] * row["requests"]
            c[1] += row["requests"]
            s["t"].append(round(w["t1"] - start, 3))
            s["threshold"].append(row["mean_threshold"])
            s["token_ratio"].append(row["token_ratio"])
            s["em_drop"].append(row["em_drop"])
            s["cum_em_drop"].append(round(c[0] / max(c[1], 1.0), 6))
    return out


def plot(stats: dict[str, Any], out: Path, budget: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = series(stats)
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for key, s in sorted(data.items()):
        axes[0].step(s["t"], s["threshold"], where="pre", label=key)
        axes[1].plot(s["t"], [100 * r for r in s["token_ratio"]], label=key)
        axes[2].plot(s["t"], [100 * d for d in s["cum_em_drop"]], label=key)
    axes[0].set_ylabel("threshold served (mean per window)")
    axes[0].set_title("stopwise demo: ONNX anytime fleet on digits, closed loop")
    axes[1].set_ylabel("tokens per request, % of full run")
    axes[1].set_ylim(0, 105)
    axes[2].set_ylabel("EM drop vs. full run, points (cumulative)")
    if budget is not None:
        axes[2].axhline(100 * budget, color="red", linestyle="--", label=f"budget {100 * budget:g} pt")
    axes[2].set_xlabel("seconds since the fleet started")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    axes[2].legend(fontsize=8, loc="center right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Plot an inferencer stats file (thresholds, tokens, EM drop over time).")
    ap.add_argument("stats", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget", type=float, default=None)
    args = ap.parse_args(argv)
    plot(json.loads(args.stats.read_text()), args.out, args.budget)


if __name__ == "__main__":  # pragma: no cover
    main()
