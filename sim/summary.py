"""Scoring a simulated run: per context and overall, token savings vs. the
full run, EM drop vs. the full run with its confidence interval, the share of
windows over budget, tokens saved as a fraction of the oracle's, and (for
worlds with drift events) how many requests the drifting context took to
return within budget.

EM drop of a set of requests = mean of ``em_full - em`` over the requests
whose EM is known (per request: the full run's answer correct minus the
delivered answer correct). Its interval is the normal approximation at the
configured confidence (two-sided). EM-budget use = EM drop / budget (the
overall budget: :func:`overall_budget`).

Exploration: ``explored_share`` = explored requests / requests; with the
world at hand, ``explore_tokens`` = the tokens explored runs used beyond
what the threshold served to them would have used (:func:`explore_tokens`),
also as a share of the full-run tokens (``explore_tokens_of_full``) and of
the tokens saved (``explore_tokens_of_saved``).

>>> ci = mean_ci([1, 0, 0, 0], 0.95)
>>> round(ci[0], 3), ci[1] < 0 < ci[2]
(0.25, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

from stopwise.daemon.config import Config

from .oracle import Oracle, window_bounds

OUTCOME_FIELDS = ("request_id", "context", "threshold", "explored", "stop_index", "tokens_used",
                  "tokens_full", "answer_hash", "em", "em_full")


@dataclass(slots=True)
class Outcome:
    """What one request got. The ten public fields go to ``outcomes.jsonl``;
    ``ts`` is kept for scoring and plots."""

    request_id: str
    context: str
    threshold: float
    explored: bool
    stop_index: int
    tokens_used: int
    tokens_full: int
    answer_hash: str
    em: int | None
    em_full: int | None
    ts: float = 0.0

    def public(self) -> dict:
        return {f: getattr(self, f) for f in OUTCOME_FIELDS}


def mean_ci(values: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): normal-approximation interval of the mean."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0, 0.0
    m = sum(values) / n
    if n == 1:
        return m, m, m
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    h = z * math.sqrt(var / n)
    return m, m - h, m + h


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal ("n/a" for None).

    >>> pct(0.1234), pct(None)
    ('12.3%', 'n/a')
    """
    return "n/a" if x is None else f"{100 * x:.1f}%"


def drops(rows: Sequence[Outcome]) -> list[int]:
    """Per-request ``em_full - em`` where both are known."""
    return [r.em_full - r.em for r in rows if r.em is not None and r.em_full is not None]


def explore_tokens(outcomes: Sequence[Outcome], requests: Sequence) -> dict[str, int]:
    """Per explored request: the tokens its full run used beyond what the
    threshold served to it would have used (``request_id -> tokens``).
    ``requests``: the world (its checkpoints), in the outcomes' order or not.

    >>> from stopwise.sim.world import WorldRequest, WorldFeedback
    >>> req = WorldRequest(request_id="r", ts=0, checkpoints=[[10, 0.95, "a"], [30, 0.99, "a"]], feedback=WorldFeedback(present=False))
    >>> explore_tokens([Outcome("r", "*", 0.9, True, 1, 30, 30, "a", None, None)], [req])
    {'r': 20}
    """
    from stopwise.daemon.stoprule import stop_index

    aligned = len(requests) == len(outcomes)
    by_id = None
    out = {}
    for i, o in enumerate(outcomes):
        if not o.explored:
            continue
        req = requests[i] if aligned else None
        if req is None or req.request_id != o.request_id:
            if by_id is None:
                by_id = {r.request_id: r for r in requests}
            req = by_id.get(o.request_id)
            if req is None:
                raise ValueError(f"explored request {o.request_id!r} is not in the world")
        cps = req.checkpoints
        out[o.request_id] = o.tokens_used - cps[stop_index(cps, o.threshold)][0]
    return out


def _stats(rows: Sequence[Outcome], budget: float, confidence: float, oracle_saved: int | None,
           extra: dict[str, int] | None = None) -> dict:
    full = sum(r.tokens_full for r in rows)
    used = sum(r.tokens_used for r in rows)
    d = drops(rows)
    m, lo, hi = mean_ci(d, confidence)
    explored = sum(1 for r in rows if r.explored)
    cost = None if extra is None else sum(extra.get(r.request_id, 0) for r in rows if r.explored)
    out = {
        "n": len(rows),
        "explored": explored,
        "explored_share": explored / len(rows) if rows else 0.0,
        "explore_tokens": cost,
        "explore_tokens_of_full": None if cost is None or not full else cost / full,
        "explore_tokens_of_saved": None if cost is None or full - used <= 0 else cost / (full - used),
        "tokens_full": full,
        "tokens_used": used,
        "tokens_saved": full - used,
        "savings": (full - used) / full if full else 0.0,
        "em_full": (sum(r.em_full for r in rows if r.em_full is not None) / max(1, sum(r.em_full is not None for r in rows))),
        "em": (sum(r.em for r in rows if r.em is not None) / max(1, sum(r.em is not None for r in rows))),
        "em_drop": m,
        "n_scored": len(d),
        "em_drop_ci": [lo, hi],
        "budget": budget,
        "em_budget_use": m / budget if budget > 0 else None,
        "oracle_tokens_saved": oracle_saved,
        "fraction_of_oracle": ((full - used) / oracle_saved) if oracle_saved else None,
    }
    return out


def window_drops(rows: Sequence[Outcome], window: int) -> list[float]:
    """EM drop of each scored window (same windows as the oracle's)."""
    out = []
    for s, e in window_bounds(len(rows), window):
        d = drops(rows[s:e])
        out.append(sum(d) / len(d) if d else 0.0)
    return out


def recovery(rows: Sequence[Outcome], since_ts: float, budget: float, window: int) -> dict:
    """After an event at ``since_ts``: tumbling windows of the context's
    requests from that time; ``requests`` = start of the first window that,
    with the next one, is within budget (None if it never settles)."""
    post = [r for r in rows if r.ts >= since_ts]
    wd = window_drops(post, window)
    over = [x > budget for x in wd]
    settled = None
    for k in range(len(wd)):
        if not over[k] and (k + 1 >= len(wd) or not over[k + 1]):
            settled = k * window
            break
    return {"requests": settled, "windows": len(wd), "windows_over_budget": sum(over), "window_drops": wd}


def overall_budget(contexts: dict[str, dict], config: Config) -> float:
    """The EM-drop budget of the whole stream: ``budget.em_drop`` in global
    mode, else the per-context budgets weighted by each context's requests
    with a known EM drop (the overall drop is that same weighted mean)."""
    known = {k: c["n_scored"] for k, c in contexts.items()}
    total = sum(known.values())
    if config.budget.mode == "global" or total == 0:
        return config.budget.em_drop
    return sum(contexts[k]["budget"] * n for k, n in known.items()) / total


def summarize(outcomes: Sequence[Outcome], oracle: Oracle, config: Config, *, window: int,
              policy: str = "", meta: dict | None = None, requests: Sequence | None = None) -> dict:
    """The ``summary.json`` of a run. With ``requests`` (the world) the
    exploration's token cost is scored too (else its fields are None)."""
    conf = config.budget.confidence
    extra = explore_tokens(outcomes, requests) if requests is not None else None
    by_ctx: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_ctx.setdefault(o.context, []).append(o)
    contexts = {}
    all_over = all_windows = 0
    for key in sorted(by_ctx):
        rows = by_ctx[key]
        budget = config.budget_for(key)
        st = _stats(rows, budget, conf, oracle.saved(key), extra)
        wd = window_drops(rows, window)
        over = sum(1 for x in wd if x > budget + 1e-12)
        st.update({"windows": len(wd), "windows_over_budget": over,
                   "share_windows_over_budget": over / len(wd) if wd else 0.0})
        contexts[key] = st
        all_over += over
        all_windows += len(wd)
    overall = _stats(outcomes, overall_budget(contexts, config), conf, oracle.saved(), extra)
    overall.update({"windows": all_windows, "windows_over_budget": all_over,
                    "share_windows_over_budget": all_over / all_windows if all_windows else 0.0,
                    "worst_context_share_over_budget": max(
                        (c["share_windows_over_budget"] for c in contexts.values()), default=0.0)})
    events = []
    for ev in (meta or {}).get("events", []):
        ctx = ev.get("context")
        if ctx in by_ctx and "ts" in ev:
            rec = recovery(by_ctx[ctx], float(ev["ts"]), config.budget_for(ctx), window)
            events.append({**ev, "recovery": rec})
    return {"policy": policy, "window": window, "overall": overall, "contexts": contexts,
            "events": events, "scenario": (meta or {}).get("scenario")}
