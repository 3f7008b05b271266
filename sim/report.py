"""``stopwise report DIR``: plots and a short markdown summary of simulated
runs. ``DIR`` is one run (holding ``summary.json``) or a folder of runs
(``DIR/<policy>/summary.json``, as ``simulate`` writes with several
policies); each run gets its PNGs and ``report.md``, and a folder of runs an
index ``report.md`` comparing them.

Plots per run: threshold in force per context (by the context's request
count) with the oracle's per window; rolling EM drop per context against its
budget; cumulative tokens saved vs. the oracle's; per-context token/EM
trade-off curve of the world with the run's operating point.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .summary import pct  # noqa: E402

PLOTS = ("thresholds.png", "em_drop.png", "tokens_saved.png", "tradeoff.png")


def _runs(root: Path) -> list[Path]:
    if (root / "summary.json").exists():
        return [root]
    from .simulator import run_rank

    return sorted((p.parent for p in root.glob("*/summary.json")), key=lambda p: run_rank(p.name))


def _load_outcomes(run: Path) -> list[dict]:
    with open(run / "outcomes.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _rolling(values: list[float], w: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= w:
            acc -= values[i - w]
        out.append(acc / min(i + 1, w))
    return out


def _thin(xs: list, ys: list, most: int = 1500) -> tuple[list, list]:
    """Every k-th point (plus the last) so a line has at most ``most`` points."""
    k = max(1, len(xs) // most)
    if k == 1:
        return xs, ys
    idx = list(range(0, len(xs), k))
    if idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _grid(n: int) -> tuple:
    cols = min(3, max(1, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16 / rows, top=1 - 0.17 / rows, wspace=0.3, hspace=0.45)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def plot_run(run: Path, summary: dict) -> list[Path]:
    """Write the four PNGs of one run (``summary``: its ``summary.json``);
    return their paths."""
    oracle = json.loads((run / "oracle.json").read_text()) if (run / "oracle.json").exists() else {}
    outcomes = _load_outcomes(run)
    by_ctx: dict[str, list[dict]] = {}
    for o in outcomes:
        by_ctx.setdefault(o["context"], []).append(o)
    ctxs = sorted(by_ctx)
    window = int(summary.get("window", 1000))
    title = f"{summary.get('scenario') or run.parent.name} / {summary.get('policy') or run.name}"
    written = []

    fig, axes = _grid(len(ctxs))
    for ax, c in zip(axes, ctxs):
        rows = by_ctx[c]
        ax.step(*_thin(list(range(len(rows))), [r["threshold"] for r in rows]), where="post", lw=0.8, label="served")
        for w in oracle.get("windows", {}).get(c, []):
            s = w["index"] * oracle["window"]
            ax.hlines(w["threshold"], s, s + w["n"], colors="tab:red", lw=2,
                      label="oracle" if w["index"] == 0 else None)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("requests of context")
        ax.set_ylabel("threshold")
        ax.set_ylim(0.45, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"threshold in force — {title}", fontsize=10)
    written.append(run / "thresholds.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    fig, axes = _grid(len(ctxs))
    for ax, c in zip(axes, ctxs):
        rows = by_ctx[c]
        d = [(r["em_full"] - r["em"]) if r["em"] is not None and r["em_full"] is not None else 0.0 for r in rows]
        ax.plot(*_thin(list(range(len(rows))), _rolling(d, window)), lw=0.8, label=f"rolling EM drop ({window})")
        budget = summary["contexts"].get(c, {}).get("budget", 0.0)
        ax.axhline(budget, color="tab:red", ls="--", lw=1, label="budget")
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("requests of context")
        ax.set_ylabel("EM drop")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"EM drop vs budget — {title}", fontsize=10)
    written.append(run / "em_drop.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.9)
    saved, acc = [], 0
    for r in outcomes:
        acc += r["tokens_full"] - r["tokens_used"]
        saved.append(acc)
    ax.plot(*_thin(list(range(len(saved))), saved), label=f"{summary.get('policy')}")
    per = oracle.get("saved_per_request")
    if per:
        oacc, ocum = 0, []
        for v in per:
            oacc += v
            ocum.append(oacc)
        ax.plot(*_thin(list(range(len(ocum))), ocum), color="tab:red", ls="--", label="oracle")
    ax.set_xlabel("requests")
    ax.set_ylabel("cumulative tokens saved")
    ax.set_title(f"tokens saved vs oracle — {title}", fontsize=10)
    ax.legend(fontsize=8)
    written.append(run / "tokens_saved.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    fig, axes = _grid(len(ctxs))
    for ax, c in zip(axes, ctxs):
        curve = oracle.get("tradeoff", {}).get(c, [])
        if curve:
            ax.plot([p["em_drop"] for p in curve], [p["savings"] for p in curve], marker=".", lw=0.8, label="world (static tau)")
            for p in curve[::3]:
                ax.annotate(f"{p['threshold']:g}", (p["em_drop"], p["savings"]), fontsize=6)
        st = summary["contexts"].get(c, {})
        if st:
            ax.plot([st["em_drop"]], [st["savings"]], "r*", ms=12, label="run")
            ax.axvline(st["budget"], color="tab:red", ls="--", lw=1, label="budget")
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("EM drop")
        ax.set_ylabel("token savings")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"token / EM trade-off — {title}", fontsize=10)
    written.append(run / "tradeoff.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    return written


def _md(text: str) -> str:
    """Escape a context key for a markdown table cell."""
    return text.replace("|", "\\|")


def run_markdown(summary: dict) -> str:
    """The ``report.md`` of one run."""
    o = summary["overall"]
    lines = [
        f"# {summary.get('scenario') or 'world'} — policy `{summary.get('policy')}`", "",
        f"Overall: token savings {pct(o['savings'])} (oracle {pct((o['oracle_tokens_saved'] or 0) / o['tokens_full'] if o['tokens_full'] else None)}), "
        f"{pct(o['fraction_of_oracle'])} of the oracle's saved tokens; EM drop {100 * o['em_drop']:.2f} pts "
        f"(CI {100 * o['em_drop_ci'][0]:.2f}..{100 * o['em_drop_ci'][1]:.2f}); windows over budget "
        f"{o['windows_over_budget']}/{o['windows']} (worst context {pct(o['worst_context_share_over_budget'])}).", "",
        "| context | n | savings | of oracle | EM drop (pts) | CI | budget | windows over |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, s in summary["contexts"].items():
        lines.append(f"| {_md(c)} | {s['n']} | {pct(s['savings'])} | {pct(s['fraction_of_oracle'])} | {100 * s['em_drop']:.2f} | "
                     f"{100 * s['em_drop_ci'][0]:.2f}..{100 * s['em_drop_ci'][1]:.2f} | {100 * s['budget']:.1f} | "
                     f"{s['windows_over_budget']}/{s['windows']} |")
    for ev in summary.get("events", []):
        r = ev["recovery"]
        lines += ["", f"Event `{ev.get('kind')}` on `{ev.get('context')}` at ts {ev.get('ts')}: back within budget after "
                      f"{r['requests'] if r['requests'] is not None else 'never (not settled)'} requests of the context "
                      f"({r['windows_over_budget']}/{r['windows']} post-event windows over budget)."]
    lines += ["", *[f"![{p}]({p})" for p in PLOTS], ""]
    return "\n".join(lines)


def make_report(root: str | Path) -> list[Path]:
    """Plots and markdown for every run under ``root``; returns files written."""
    root = Path(root)
    runs = _runs(root)
    if not runs:
        raise FileNotFoundError(f"{root}: no summary.json here or in its sub-folders")
    written: list[Path] = []
    summaries = {}
    for run in runs:
        s = json.loads((run / "summary.json").read_text())
        written += plot_run(run, s)
        summaries[run.name] = s
        (run / "report.md").write_text(run_markdown(s))
        written.append(run / "report.md")
    if runs != [root]:
        lines = ["# Simulation report", "", "| policy | savings | of oracle | EM drop (pts) | windows over budget | worst context over |",
                 "|---|---|---|---|---|---|"]
        for name, s in summaries.items():
            o = s["overall"]
            lines.append(f"| [{name}]({name}/report.md) | {pct(o['savings'])} | {pct(o['fraction_of_oracle'])} | "
                         f"{100 * o['em_drop']:.2f} | {o['windows_over_budget']}/{o['windows']} | "
                         f"{pct(o['worst_context_share_over_budget'])} |")
        (root / "report.md").write_text("\n".join(lines) + "\n")
        written.append(root / "report.md")
    return written
