"""The policies x scenarios table of ``make sim`` (``scripts/sim.sh``), with
pass/fail against the issue's targets:

* stationary, reference: saves >= 90% of the oracle's tokens, and every
  context's EM drop is within budget in >= 95% of its windows;
* abrupt_drift, reference: the drifting context is back within budget within
  2,000 of its requests after the drift (see :func:`summary.recovery`).

Run as ``python -m stopwise.sim.matrix ROOT [--out FILE] [--command CMD]``
where ``ROOT/<scenario>/<policy>/summary.json`` exist. The table replaces the
``<!-- sim:matrix -->`` section of ``FILE`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .summary import pct

ORACLE_FRACTION_TARGET = 0.90
WINDOWS_WITHIN_TARGET = 0.95
RECOVERY_TARGET = 2000


def verdict(scenario: str, policy: str, s: dict) -> str:
    """Pass/fail text for the targeted (scenario, policy) cells, else '-'."""
    if policy != "reference":
        return "-"
    o = s["overall"]
    if scenario == "stationary":
        frac = o["fraction_of_oracle"] or 0.0
        worst = o["worst_context_share_over_budget"]
        ok = frac >= ORACLE_FRACTION_TARGET and worst <= 1 - WINDOWS_WITHIN_TARGET
        return (f"{'PASS' if ok else 'FAIL'} (oracle share {pct(frac)} vs >= 90%; "
                f"worst context windows within budget {pct(1 - worst)} vs >= 95%)")
    if scenario == "abrupt_drift":
        evs = [e for e in s.get("events", []) if e.get("kind") == "abrupt_drift"]
        if not evs:
            return "n/a (no drift event)"
        r = evs[0]["recovery"]["requests"]
        ok = r is not None and r <= RECOVERY_TARGET
        return f"{'PASS' if ok else 'FAIL'} (back within budget after {r if r is not None else 'never'} requests vs <= 2000)"
    return "-"


def table(root: str | Path) -> str:
    """Markdown table over every ``root/<scenario>/<policy>/summary.json``."""
    from .simulator import run_rank

    root = Path(root)
    lines = ["| scenario | policy | token savings | of oracle's savings | EM drop (pts, CI) | windows over budget | worst context | target |",
             "|---|---|---|---|---|---|---|---|"]
    for sdir in sorted(p for p in root.iterdir() if p.is_dir()):
        runs = sorted(sdir.glob("*/summary.json"), key=lambda p: run_rank(p.parent.name))
        for sp in runs:
            s = json.loads(sp.read_text())
            o = s["overall"]
            lo, hi = o["em_drop_ci"]
            lines.append(
                f"| {sdir.name} | {sp.parent.name} | {pct(o['savings'])} | {pct(o['fraction_of_oracle'])} | "
                f"{100 * o['em_drop']:.2f} ({100 * lo:.2f}..{100 * hi:.2f}) | {o['windows_over_budget']}/{o['windows']} | "
                f"{pct(o['worst_context_share_over_budget'])} | {verdict(sdir.name, sp.parent.name, s)} |")
    return "\n".join(lines) + "\n"


def diagnose(root: str | Path, scenario: str = "stationary", policy: str = "reference") -> str:
    """Why a run saves what it saves vs. the oracle: the best fixed
    per-context threshold in hindsight (whole stream, within budget), the
    exploration share and the tokens exploration cost, and per context the
    threshold served in the second half vs. the best fixed one. Needs
    ``root/worlds/<scenario>.jsonl`` and the run's files; '' if missing."""
    from statistics import median

    from stopwise.daemon.stoprule import stop_index

    from .world import iter_world

    run = Path(root) / scenario / policy
    world = Path(root) / "worlds" / f"{scenario}.jsonl"
    if not (run / "summary.json").exists() or not (run / "oracle.json").exists() or not world.exists():
        return ""
    s = json.loads((run / "summary.json").read_text())
    o = json.loads((run / "oracle.json").read_text())
    oracle_saved = o["saved_tokens"]["overall"] or 1
    best = {}
    for key, curve in o["tradeoff"].items():
        budget = s["contexts"][key]["budget"]
        best[key] = max((p for p in curve if p["em_drop"] <= budget + 1e-12), key=lambda p: (p["savings"], p["threshold"]))
    static_saved = sum(best[k]["savings"] * s["contexts"][k]["tokens_full"] for k in best)
    cps = {r.request_id: r.checkpoints for r in iter_world(world)}
    served: dict[str, list[float]] = {}
    explored = cost = n = 0
    with open(run / "outcomes.jsonl", encoding="utf-8") as fh:
        for line in fh:
            x = json.loads(line)
            n += 1
            served.setdefault(x["context"], []).append(x["threshold"])
            if x["explored"]:
                explored += 1
                c = cps[x["request_id"]]
                cost += x["tokens_full"] - c[stop_index(c, x["threshold"])][0]
    lines = [f"Diagnosis of `{policy}` on `{scenario}` (computed by `python -m stopwise.sim.matrix`):", "",
             f"- best fixed per-context threshold chosen in hindsight on the whole stream saves "
             f"{pct(static_saved / oracle_saved)} of the per-window oracle's tokens;",
             f"- {explored} of {n} requests ({pct(explored / n if n else 0)}) explored (ran to the end); the tokens those "
             f"full runs cost beyond the served threshold equal {pct(cost / oracle_saved)} of the oracle's savings;"]
    for key in sorted(best):
        th = served.get(key, [])
        half = th[len(th) // 2:] or [1.0]
        c = s["contexts"][key]
        lines.append(f"- `{key}`: served threshold (median, 2nd half) {median(half):g} vs best fixed {best[key]['threshold']:g} "
                     f"(EM drop {100 * best[key]['em_drop']:.2f} pts vs budget {100 * c['budget']:.2f}); "
                     f"{pct(c['fraction_of_oracle'])} of the oracle's tokens.")
    return "\n".join(lines) + "\n"


def replace_section(text: str, name: str, body: str) -> str:
    """Replace (or append) the ``<!-- sim:NAME -->`` ... ``<!-- /sim:NAME -->`` section.

    >>> replace_section("a\\n", "x", "B\\n")
    'a\\n\\n<!-- sim:x -->\\nB\\n<!-- /sim:x -->\\n'
    >>> replace_section(_, "x", "C\\n")
    'a\\n\\n<!-- sim:x -->\\nC\\n<!-- /sim:x -->\\n'
    """
    start, end = f"<!-- sim:{name} -->", f"<!-- /sim:{name} -->"
    block = f"{start}\n{body}{end}\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end + "\n") if (end + "\n") in rest else rest.partition(end)
        return head + block + tail
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--out", default=None)
    ap.add_argument("--command", default="make sim")
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    body = f"## Policies x scenarios (closed-loop simulator)\n\nMade by: `{a.command}`\n\n{table(a.root)}"
    diag = diagnose(a.root)
    if diag:
        body += "\n" + diag
    if a.note:
        body += f"\n{a.note}\n"
    if a.out:
        p = Path(a.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(replace_section(p.read_text() if p.exists() else "# Simulator results\n", "matrix", body))
    print(body)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
