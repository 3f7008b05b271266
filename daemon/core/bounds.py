"""Exact binomial (Clopper-Pearson) bounds, on possibly fractional,
recency-weighted effective counts.

With weights ``w_i`` (recency decay x inverse propensity) the effective
sample size is Kish's ``n_eff = (sum w)^2 / sum w^2`` and the effective
loss count ``k_eff = mean * n_eff``; the beta quantiles extend
Clopper-Pearson to non-integer counts. Unlike Hoeffding's
``sqrt(log(1/delta) / 2n)`` (about 0.07 at n=300), this bound is tight
near 0: zero losses in 300 samples give an upper bound under 1%.
(Quantiles via ``scipy.special.betaincinv``, the same values as
``scipy.stats.beta.ppf`` at a fraction of the cost.)

>>> round(cp_upper(0, 300, 0.95), 5)
0.00994
>>> hoeffding_upper(0.0, 300, 0.95) > 0.01
True
>>> round(cp_upper(5, 100, 0.95), 4), round(cp_lower(5, 100, 0.95), 4)
(0.1023, 0.0199)
"""

from __future__ import annotations

import math

from scipy.special import betaincinv


def cp_upper(k: float, n: float, confidence: float) -> float:
    """One-sided upper bound on a binomial rate at ``confidence``."""
    if n <= 0:
        return 1.0
    k = min(max(k, 0.0), n)
    if k >= n:
        return 1.0
    return float(betaincinv(k + 1.0, n - k, confidence))


def cp_lower(k: float, n: float, confidence: float) -> float:
    """One-sided lower bound on a binomial rate at ``confidence``."""
    if n <= 0:
        return 0.0
    k = min(max(k, 0.0), n)
    if k <= 0:
        return 0.0
    return float(betaincinv(k, n - k + 1.0, 1.0 - confidence))


def hoeffding_upper(mean: float, n: float, confidence: float) -> float:
    """Hoeffding's upper bound (for comparison only; far looser near 0)."""
    if n <= 0:
        return 1.0
    return min(1.0, mean + math.sqrt(math.log(1.0 / (1.0 - confidence)) / (2.0 * n)))


def kish(w: float, w2: float) -> float:
    """Kish effective sample size from sum of weights and sum of squares.

    >>> kish(10.0, 10.0), kish(10.0, 50.0)
    (10.0, 2.0)
    """
    return (w * w) / w2 if w2 > 0 else 0.0
