"""Global budget mode: one traffic-weighted EM budget spread across contexts."""

from __future__ import annotations

from .estimator import TauStats


def allocate_global(stats: dict[str, TauStats], shares: dict[str, float], total: float,
                    caps: dict[str, float]) -> dict[str, float]:
    """Greedy Lagrangian allocation of one traffic-weighted budget.

    Each context starts at 1.0 (no spend). Repeatedly take the single move
    (one context one grid step more aggressive) with the best marginal ratio
    ``share * extra savings / (share * extra UCB)`` -- the discrete
    Lagrangian/knapsack greedy -- while ``sum(share * UCB) <= total`` and
    each context's UCB stays under its own cap (the per-context floors on
    EM). Returns each context's allocated budget: the UCB at its chosen tau
    (``0.0`` = stay conservative).

    >>> st = TauStats((0.5, 0.9, 1.0), (0.0, 0.0, 0.0), (0.03, 0.004, 0.0), (0.3, 0.6, 1.0), 1e4, 1, 1)
    >>> allocate_global({"a": st, "b": st}, {"a": 0.5, "b": 0.5}, 0.01, {"a": 0.05, "b": 0.05})
    {'a': 0.004, 'b': 0.004}
    """
    pos = {k: len(s.taus) - 1 for k, s in stats.items()}
    spent = 0.0
    while True:
        best = None
        for k, s in stats.items():
            i = pos[k]
            if i == 0:
                continue
            j = i - 1
            d_loss = s.ucb[j] - s.ucb[i]
            d_save = s.cost[i] - s.cost[j]
            if s.ucb[j] > caps.get(k, 1.0) or spent + shares[k] * d_loss > total + 1e-12:
                continue
            ratio = d_save / max(d_loss, 1e-9)
            if best is None or ratio > best[0]:
                best = (ratio, k, j, d_loss)
        if best is None or best[0] <= 0:
            break
        _, k, j, d_loss = best
        pos[k] = j
        spent += shares[k] * d_loss
    return {k: stats[k].ucb[pos[k]] for k in stats}
