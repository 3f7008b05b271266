"""Guardrails between a policy's proposal and a published threshold.

Applied in this order (:meth:`Guardrails.apply`):

1. kill switch (config ``guardrails.kill_switch`` or
   ``Controller.set_kill_switch``): 1.0 everywhere, reason ``kill_switch``;
2. circuit breaker: each context keeps a window of the last
   ``breaker_window`` informative served outcomes (loss the served threshold
   caused, with its Horvitz-Thompson weight, see :mod:`.counterfactual`).
   Once the window holds ``min(breaker_window, 100)`` outcomes, it trips when
   the realized drop (weighted mean) exceeds ``budget + breaker_margin`` AND
   its Clopper-Pearson lower bound (Kish effective n, and never more losses
   than were actually observed) exceeds the budget, so one unlucky
   inverse-propensity-weighted loss does not trip it. Tripped: 1.0, reason
   ``circuit_breaker``, for ``breaker_cooldown_s``; the window is cleared;
   afterwards the policy resumes (stepping down by ``max_step``);
3. minimum evidence: below ``min_evidence`` samples (the estimator's
   recency-decayed count of informative examples), the
   conservative default (``context.default_threshold``), reason
   ``min_evidence``;
4. clamp to ``[min_threshold, max_threshold]`` (1.0 is always allowed);
5. maximum step: a move toward MORE aggressive is limited to ``max_step``
   per update; moves toward conservative apply at once (safety first).

Hysteresis (no publication for changes below ``guardrails.hysteresis``) is
applied by the controller when comparing with the last published record.

>>> from stopwise.daemon.config import GuardrailsConfig
>>> g = Guardrails(GuardrailsConfig(min_evidence=0))
>>> g.apply("*", 0.3, current=1.0, budget=0.01, n_eff=1000, now=0.0)
(0.9, 'step')
"""

from __future__ import annotations

from collections import deque
from operator import mul

from ..config import GuardrailsConfig
from ..stoprule import NO_EARLY_STOP
from .bounds import cp_lower, kish


class _Breaker:
    __slots__ = ("window", "until", "trips")

    def __init__(self, size: int) -> None:
        self.window: deque = deque(maxlen=size)
        self.until = float("-inf")
        self.trips = 0

    def __getstate__(self):
        return (list(self.window), self.window.maxlen, self.until, self.trips)

    def __setstate__(self, s):
        items, size, self.until, self.trips = s
        self.window = deque(items, maxlen=size)


def _sums(br: _Breaker | None) -> tuple[float, float, int, int]:
    """(weighted mean loss, Kish n, outcomes, outcomes with a loss) of a window."""
    if br is None or not br.window:
        return 0.0, 0.0, 0, 0
    losses, weights = zip(*br.window)
    w = sum(weights)
    w2 = sum(map(mul, weights, weights))
    mean = sum(map(mul, losses, weights)) / w
    return mean, kish(w, w2), len(weights), len(losses) - losses.count(0)


class Guardrails:
    """See the module doc. Holds the per-context breaker state."""

    def __init__(self, config: GuardrailsConfig, default_threshold: float = NO_EARLY_STOP, confidence: float = 0.95) -> None:
        self.config = config
        self.default_threshold = default_threshold
        self.confidence = confidence
        self._breakers: dict[str, _Breaker] = {}

    def reconfigure(self, config: GuardrailsConfig, default_threshold: float, confidence: float) -> None:
        self.config, self.default_threshold, self.confidence = config, default_threshold, confidence
        for key, br in self._breakers.items():
            if br.window.maxlen != config.breaker_window:
                br.window = deque(br.window, maxlen=config.breaker_window)

    def _breaker(self, key: str) -> _Breaker:
        br = self._breakers.get(key)
        if br is None:
            br = self._breakers[key] = _Breaker(self.config.breaker_window)
        return br

    def observe(self, key: str, served_loss: int | None, weight: float) -> None:
        """Record one informative served outcome of ``key``."""
        if served_loss is None or weight <= 0:
            return
        self._breaker(key).window.append((served_loss, weight))

    def realized(self, key: str) -> tuple[float, float, int]:
        """(weighted realized drop, its effective n, outcomes) of the window."""
        return _sums(self._breakers.get(key))[:3]

    def tripped(self, key: str, now: float) -> bool:
        br = self._breakers.get(key)
        return br is not None and now < br.until

    def trips(self, key: str) -> int:
        br = self._breakers.get(key)
        return br.trips if br else 0

    def _check_breaker(self, key: str, budget: float, now: float) -> bool:
        br = self._breaker(key)
        if now < br.until:
            return True
        cfg = self.config
        mean, n_eff, count, n_losses = _sums(br)
        # the evidence never counts more losses than were actually observed
        k_eff = min(mean * n_eff, float(n_losses))
        if count >= min(cfg.breaker_window, 100) and mean > budget + cfg.breaker_margin \
                and cp_lower(k_eff, n_eff, self.confidence) > budget:
            br.until = now + cfg.breaker_cooldown_s
            br.trips += 1
            br.window.clear()
            return True
        return False

    def apply(self, key: str, threshold: float, *, current: float, budget: float, n_eff: float,
              now: float, kill: bool = False) -> tuple[float, str]:
        """The guarded threshold and the rule that bound it ('' if none)."""
        cfg = self.config
        if kill or cfg.kill_switch:
            return NO_EARLY_STOP, "kill_switch"
        if self._check_breaker(key, budget, now):
            return NO_EARLY_STOP, "circuit_breaker"
        reason = ""
        if n_eff < cfg.min_evidence and threshold < self.default_threshold:
            return self.default_threshold, "min_evidence"
        if threshold < NO_EARLY_STOP:
            clamped = min(max(threshold, cfg.min_threshold), cfg.max_threshold)
            if clamped != threshold:
                threshold, reason = clamped, "clamp"
        if threshold < current - cfg.max_step:
            threshold, reason = round(current - cfg.max_step, 6), "step"
        return threshold, reason
