"""The hindsight oracle: from the world file alone, per context and per window
(``window`` consecutive requests of that context), the threshold on the
config grid (plus 1.0, no early stop) that saves the most tokens while the
window's EM drop (mean of ``em_full - em_tau``) stays within the context's
budget, and what it saves. Also the whole-stream token/EM trade-off curve.

Windows are tumbling, in event-time order; a trailing partial window is kept
when it holds at least half a window (else folded into nothing: unscored).
The simulator's summary scores served traffic on exactly the same windows.

>>> from stopwise.daemon.config import Config
>>> from stopwise.sim.world import WorldRequest, WorldFeedback
>>> fb = WorldFeedback(present=True)
>>> reqs = [WorldRequest(request_id=f"r{i}", ts=i, context={"task": "qa"}, checkpoints=[[10, 0.9, "a"], [20, 0.99, "a"]],
...                      gold_answer_hash="a", feedback=fb) for i in range(4)]
>>> o = compute_oracle(reqs, Config(), window=4)
>>> w = o.windows["task=qa"][0]
>>> w.threshold, w.saved_tokens, w.full_tokens
(0.9, 40, 80)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from stopwise.daemon.config import Config
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.counterfactual import stop_indices
from stopwise.daemon.stoprule import NO_EARLY_STOP

from .world import WorldRequest


def oracle_grid(config: Config) -> tuple[float, ...]:
    """The thresholds the oracle may pick: the config grid plus 1.0."""
    return tuple(config.grid.taus) + (NO_EARLY_STOP,)


def window_bounds(n: int, window: int) -> list[tuple[int, int]]:
    """Tumbling ``[start, end)`` windows over ``n`` items; the trailing partial
    window is kept only if it has at least half a window.

    >>> window_bounds(10, 4), window_bounds(5, 4), window_bounds(1, 4)
    ([(0, 4), (4, 8), (8, 10)], [(0, 4)], [])
    """
    out = [(s, s + window) for s in range(0, n - window + 1, window)]
    done = out[-1][1] if out else 0
    if n - done >= max(1, (window + 1) // 2):
        out.append((done, n))
    return out


@dataclass(slots=True)
class RequestGrid:
    """One request's outcome at every oracle threshold (truth, not labels)."""

    index: int                      # position in the ts-sorted world
    context: str
    ts: float
    tokens_full: int
    em_full: int | None
    tokens: tuple[int, ...]         # tokens used per grid tau
    em: tuple[int | None, ...]      # true EM per grid tau


def grid_outcomes(req: WorldRequest, index: int, key: str, taus: Sequence[float]) -> RequestGrid:
    """Stop points of ``req`` at every tau: the shared rule of
    :func:`stopwise.daemon.stoprule.stop_index` (first score >= tau, else the
    last), all taus in one pass (:func:`~stopwise.daemon.core.counterfactual.stop_indices`)."""
    cps = req.checkpoints
    toks, ems = [], []
    for i in stop_indices(cps, taus):
        toks.append(cps[i][0])
        ems.append(req.em_of(cps[i][2]))
    return RequestGrid(index, key, req.ts, cps[-1][0], req.em_of(cps[-1][2]), tuple(toks), tuple(ems))


@dataclass(slots=True)
class OracleWindow:
    context: str
    index: int
    start_ts: float
    end_ts: float
    n: int
    threshold: float
    saved_tokens: int
    full_tokens: int
    em_drop: float
    budget: float


@dataclass
class Oracle:
    taus: tuple[float, ...]
    window: int
    windows: dict[str, list[OracleWindow]] = field(default_factory=dict)
    saved_per_request: list[int] = field(default_factory=list)   # world order; 0 outside scored windows
    tradeoff: dict[str, list[dict]] = field(default_factory=dict)

    def saved(self, context: str | None = None) -> int:
        ws = self.windows.get(context, []) if context else [w for v in self.windows.values() for w in v]
        return sum(w.saved_tokens for w in ws)

    def to_dict(self) -> dict:
        return {
            "taus": list(self.taus), "window": self.window,
            "windows": {k: [asdict(w) for w in v] for k, v in self.windows.items()},
            "tradeoff": self.tradeoff,
            "saved_per_request": self.saved_per_request,
            "saved_tokens": {k: self.saved(k) for k in self.windows} | {"overall": self.saved()},
        }


def _drop(rows: Sequence[RequestGrid], j: int) -> float:
    diffs = [r.em_full - r.em[j] for r in rows if r.em_full is not None and r.em[j] is not None]
    return sum(diffs) / len(diffs) if diffs else 0.0


def best_threshold(rows: Sequence[RequestGrid], taus: Sequence[float], budget: float) -> tuple[int, int, float]:
    """(tau index, tokens saved, EM drop) of the most saving tau within budget;
    ties go to the higher (more conservative) tau. 1.0 is always feasible."""
    best = (len(taus) - 1, 0, 0.0)
    for j in range(len(taus) - 1, -1, -1):
        drop = _drop(rows, j)
        if drop > budget + 1e-12:
            continue
        saved = sum(r.tokens_full - r.tokens[j] for r in rows)
        if saved > best[1]:
            best = (j, saved, drop)
    return best


def compute_oracle(requests: Sequence[WorldRequest], config: Config, window: int = 1000,
                   keyer: ContextKeyer | None = None) -> Oracle:
    """The oracle of a (ts-sorted) world under ``config``'s grid and budgets."""
    keyer = keyer or ContextKeyer(config.context.dimensions)
    taus = oracle_grid(config)
    by_ctx: dict[str, list[RequestGrid]] = {}
    for i, req in enumerate(requests):
        key = keyer.key(req.context)
        by_ctx.setdefault(key, []).append(grid_outcomes(req, i, key, taus))
    oracle = Oracle(taus=taus, window=window, saved_per_request=[0] * len(requests))
    for key, rows in by_ctx.items():
        budget = config.budget_for(key)
        wins = []
        for k, (s, e) in enumerate(window_bounds(len(rows), window)):
            part = rows[s:e]
            j, saved, drop = best_threshold(part, taus, budget)
            for r in part:
                oracle.saved_per_request[r.index] = r.tokens_full - r.tokens[j]
            wins.append(OracleWindow(key, k, part[0].ts, part[-1].ts, len(part), taus[j], saved,
                                     sum(r.tokens_full for r in part), drop, budget))
        oracle.windows[key] = wins
        full = sum(r.tokens_full for r in rows) or 1
        oracle.tradeoff[key] = [
            {"threshold": tau, "savings": sum(r.tokens_full - r.tokens[j] for r in rows) / full,
             "em_drop": _drop(rows, j)}
            for j, tau in enumerate(taus)
        ]
    return oracle
