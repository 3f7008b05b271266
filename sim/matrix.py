"""The policies x scenarios table of ``make sim`` (``scripts/sim.sh``), with
pass/fail against the issue-9 "Done when" targets, on the ``reference``
rows (windows: 1,000 requests of one context; "windows over budget" = the
share of all context-windows of the run whose EM drop exceeds the
context's budget):

* ``prod_30`` / ``prod_5`` / ``prod_0`` (30% / 5% / no feedback): saves
  >= 85% / 80% / 75% of the oracle's tokens, with <= 5% of context-windows
  over budget;
* ``abrupt_drift`` and ``prod_drift``: the drifting context is back within
  budget within 2,000 of its requests after the drift
  (:func:`summary.recovery`);
* every scenario: ahead of ``offline`` on savings with no more windows over
  budget; ahead of ``static-0.95`` on savings wherever static-0.95 stays
  within budget (<= 5% of its context-windows over), else n/a.

Columns also show the EM-budget use (realized EM drop / budget) and the
explored share of traffic (with, in brackets, the tokens exploration cost
beyond the served threshold, as a share of all full-run tokens). Run as ``python -m stopwise.sim.matrix ROOT
[--out FILE] [--command CMD]`` where ``ROOT/<scenario>/<policy>/summary.json``
exist. The table replaces the ``<!-- sim:matrix -->`` section of ``FILE``
(other sections are kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .summary import pct

ORACLE_TARGETS = {"prod_30": 0.85, "prod_5": 0.80, "prod_0": 0.75}
WINDOWS_OVER_TARGET = 0.05
RECOVERY_TARGET = 2000
DRIFT_SCENARIOS = ("abrupt_drift", "prod_drift")
TARGETED = "reference"


def _over(s: dict) -> float:
    return s["overall"].get("share_windows_over_budget", 0.0)


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def verdicts(scenario: str, policy: str, runs: dict[str, dict]) -> list[str]:
    """Pass/fail texts of ``policy``'s run in ``scenario`` against the
    targets (``runs``: every policy's summary in that scenario); ``[]`` for
    an untargeted policy."""
    if policy != TARGETED or policy not in runs:
        return []
    s = runs[policy]
    o = s["overall"]
    out = []
    if scenario in ORACLE_TARGETS:
        target = ORACLE_TARGETS[scenario]
        frac = o.get("fraction_of_oracle") or 0.0
        ok = frac >= target and _over(s) <= WINDOWS_OVER_TARGET
        out.append(f"{_mark(ok)} oracle share {pct(frac)} vs >= {pct(target)}, "
                   f"windows over budget {pct(_over(s))} vs <= {pct(WINDOWS_OVER_TARGET)}")
    if scenario in DRIFT_SCENARIOS:
        evs = [e for e in s.get("events", []) if e.get("kind") == "abrupt_drift"]
        if not evs:
            out.append("n/a recovery (no drift event)")
        else:
            r = evs[0]["recovery"]["requests"]
            ok = r is not None and r <= RECOVERY_TARGET
            out.append(f"{_mark(ok)} back within budget after {r if r is not None else 'never'} requests "
                       f"vs <= {RECOVERY_TARGET}")
    off = runs.get("offline")
    if off is not None:
        ok = o["savings"] > off["overall"]["savings"] and o["windows_over_budget"] <= off["overall"]["windows_over_budget"]
        out.append(f"{_mark(ok)} vs offline: savings {pct(o['savings'])} vs {pct(off['overall']['savings'])}, "
                   f"windows over {o['windows_over_budget']} vs {off['overall']['windows_over_budget']}")
    st = runs.get("static-0.95")
    if st is not None:
        if _over(st) > WINDOWS_OVER_TARGET:
            out.append(f"n/a vs static-0.95 (over budget in {pct(_over(st))} of its windows)")
        else:
            ok = o["savings"] > st["overall"]["savings"]
            out.append(f"{_mark(ok)} vs static-0.95: savings {pct(o['savings'])} vs {pct(st['overall']['savings'])}")
    return out


def verdict(scenario: str, policy: str, runs: dict[str, dict]) -> str:
    """:func:`verdicts` as one table cell ('-' when untargeted).

    >>> run = {"overall": {"savings": 0.4, "windows_over_budget": 0, "share_windows_over_budget": 0.0,
    ...                    "fraction_of_oracle": 0.9}, "events": []}
    >>> verdict("prod_30", "reference", {"reference": run})
    'PASS oracle share 90.0% vs >= 85.0%, windows over budget 0.0% vs <= 5.0%'
    >>> verdict("prod_30", "naive", {"reference": run})
    '-'
    """
    return "; ".join(verdicts(scenario, policy, runs)) or "-"


def _explored(o: dict) -> str:
    """Explored share of traffic, with the tokens exploration cost beyond
    the served threshold as a share of all full-run tokens when known."""
    share = o["explored_share"] if "explored_share" in o else (o["explored"] / o["n"] if o.get("n") else None)
    cost = o.get("explore_tokens_of_full")
    return pct(share) + (f" ({pct(cost)} of tokens)" if cost is not None else "")


def _budget_use(o: dict) -> float | None:
    if "em_budget_use" in o:
        return o["em_budget_use"]
    return o["em_drop"] / o["budget"] if o.get("budget") else None


def table(root: str | Path) -> str:
    """Markdown table over every ``root/<scenario>/<policy>/summary.json``,
    then the count of targets passed."""
    from .simulator import run_rank

    root = Path(root)
    lines = ["| scenario | policy | token savings | of oracle's savings | EM drop (pts, CI) | EM-budget use | "
             "explored share | windows over budget | worst context | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    passed = failed = 0
    for sdir in sorted(p for p in root.iterdir() if p.is_dir()):
        paths = sorted(sdir.glob("*/summary.json"), key=lambda p: run_rank(p.parent.name))
        runs = {sp.parent.name: json.loads(sp.read_text()) for sp in paths}
        for name, s in runs.items():
            o = s["overall"]
            lo, hi = o["em_drop_ci"]
            vs = verdicts(sdir.name, name, runs)
            passed += sum(v.startswith("PASS") for v in vs)
            failed += sum(v.startswith("FAIL") for v in vs)
            lines.append(
                f"| {sdir.name} | {name} | {pct(o['savings'])} | {pct(o['fraction_of_oracle'])} | "
                f"{100 * o['em_drop']:.2f} ({100 * lo:.2f}..{100 * hi:.2f}) | {pct(_budget_use(o))} | "
                f"{_explored(o)} | {o['windows_over_budget']}/{o['windows']} | "
                f"{pct(o['worst_context_share_over_budget'])} | {'; '.join(vs) or '-'} |")
    lines.append("")
    lines.append(f"Targets ({TARGETED} rows): {passed} passed, {failed} failed.")
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
    for scenario in ("stationary", "prod_30"):
        diag = diagnose(a.root, scenario)
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
