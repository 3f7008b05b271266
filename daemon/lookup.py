"""The threshold in force for one request, shared by the inferencer client
(:class:`stopwise.clients.table.ThresholdTable`) and the simulator
(:class:`stopwise.sim.simulator.ThresholdTable`) so that both apply exactly
the same rule: fallback, expiry, the no-record default and the exploration
draw.

* Fallback: the record of the request's own context key, else of its
  parents in turn (:func:`~stopwise.daemon.context.parents`: ``task=qa|domain=x``,
  ``task=qa``, ``*``); a record whose ``expires_at`` is not after ``now`` is
  skipped as if absent.
* No record in force anywhere along the chain (no daemon yet, thresholds
  topic unreachable long enough for every record to expire): the configured
  ``default_threshold`` (1.0 = never stop early) and the exploration rate
  :data:`NO_RECORD_EXPLORE_RATE` = 0. Exploring under the default would buy
  nothing: at 1.0 every run is already complete (and informs every tau), and
  an operator who configures a lower default asked for that threshold, not for
  full runs on a share of traffic. Version 0 and source ``''`` mark the default.
* Exploration: a request explores when the stable hash draw of its
  request_id is below the rate (:func:`~stopwise.daemon.stoprule.explores`);
  never at rate 0. The logged propensity is the probability of the choice made.

>>> from types import SimpleNamespace as R
>>> recs = {"task=qa": R(threshold=0.9, explore_rate=0.1, version=3, expires_at=200.0, context="task=qa"),
...         "*": R(threshold=0.95, explore_rate=0.05, version=7, expires_at=50.0, context="*")}
>>> lookup(recs, "task=qa|domain=finance", now=100.0)
(0.9, 0.1, 3, 'task=qa')
>>> lookup(recs, "task=math", now=10.0), lookup(recs, "task=math", now=100.0)
((0.95, 0.05, 7, '*'), (1.0, 0.0, 0, ''))
>>> cache = {}
>>> in_force(recs, "task=qa|domain=law", 100.0, cache).version, list(cache)
(3, ['task=qa|domain=law'])
>>> draw("req-1", 0.0), draw("req-1", 1.0)
((False, 1.0), (True, 1.0))
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from .context import parents
from .stoprule import NO_EARLY_STOP, explores, propensity

NO_RECORD_EXPLORE_RATE = 0.0
"""Exploration rate when no record is in force along a key's chain."""
CACHE_MAX = 10_000
"""Keys a lookup cache remembers (beyond it, lookups walk the chain)."""


@lru_cache(maxsize=16384)
def chain(key: str) -> tuple[str, ...]:
    """``parents(key)`` as a tuple, memoised (a pure function of the key)."""
    return tuple(parents(key))


def in_force(records: Mapping[str, Any], key: str, now: float,
             cache: dict[str, tuple] | None = None) -> Any | None:
    """The most specific record along ``key``'s fallback chain whose
    ``expires_at`` is after ``now``, or ``None``. ``cache`` (optional, owned
    by the caller and emptied whenever ``records`` changes) memoises the
    records along each key's chain, for lookups on a hot path."""
    recs = cache.get(key) if cache is not None else None
    if recs is None:
        recs = tuple(r for r in map(records.get, chain(key)) if r is not None)
        if cache is not None and len(cache) < CACHE_MAX:
            cache[key] = recs
    for rec in recs:
        if rec.expires_at > now:
            return rec
    return None


def lookup(records: Mapping[str, Any], key: str, now: float, default_threshold: float = NO_EARLY_STOP,
           default_explore_rate: float = NO_RECORD_EXPLORE_RATE,
           cache: dict[str, tuple] | None = None) -> tuple[float, float, int, str]:
    """``(threshold, explore_rate, version, source)`` in force for ``key`` at
    ``now``: the record of :func:`in_force` (``source`` = its context key),
    else the defaults with version 0 and source ``''``."""
    rec = in_force(records, key, now, cache)
    if rec is None:
        return default_threshold, default_explore_rate, 0, ""
    return rec.threshold, rec.explore_rate, rec.version, rec.context


def draw(request_id: str, explore_rate: float) -> tuple[bool, float]:
    """``(explores, propensity)`` for one request under ``explore_rate``."""
    explored = explores(request_id, explore_rate) if explore_rate > 0.0 else False
    return explored, propensity(explored, explore_rate)
