"""The closed-loop simulator: plays the inferencer fleet over a world file in
event time and drives the same pure core (:class:`Core`) the daemon runs,
without Kafka.

For each request (in ``ts`` order) it looks up the threshold record in force
(records published by a tick at ``t`` become visible at ``t + publish_delay``)
and draws exploration with the very functions the real inferencer's table
uses (:func:`stopwise.daemon.lookup.lookup` and :func:`~stopwise.daemon.lookup.draw`:
fallback along the parents to ``*``, expired records skipped, then the
configured default threshold with no exploration), delivers the answer at
:func:`stop_index` (an exploring request runs to the end and delivers the
full answer), emits the inference
event (the checkpoints up to the stop, or all of them when exploring) and,
``delay_s`` later if the user responds, the feedback event. ``Core.tick`` runs
every ``config.publish.interval_s`` of event time (through idle stretches with
nothing pending, every ``record_ttl_s / 8`` so records are still refreshed).

Policy names accept aliases: ``none`` (static 1.0), ``static-<tau>``
(e.g. ``static-0.95``), and every :data:`stopwise.policies.POLICIES` name.

>>> resolve_policy("none"), resolve_policy("static-0.95"), resolve_policy("reference")
(('static', {'threshold': 1.0}), ('static', {'threshold': 0.95}), ('reference', {}))
"""

from __future__ import annotations

import heapq
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from stopwise.daemon.config import Config
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.errors import StopwiseError
from stopwise.daemon.records import FeedbackEvent, InferenceEvent, ThresholdRecord
from stopwise.daemon.lookup import NO_RECORD_EXPLORE_RATE, draw, lookup
from stopwise.daemon.stoprule import stop_index

from .summary import Outcome

ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("static", {"threshold": 1.0}),
    "full": ("static", {"threshold": 1.0}),
}
BASELINES = ("none", "static-0.95", "offline", "naive", "reference")
"""The policies ``make sim`` compares side by side."""


def run_rank(name: str) -> tuple[int, str]:
    """Sort key of a run by policy name: the baselines in their order, then
    the others by name.

    >>> sorted(["zeta", "reference", "alpha", "none"], key=run_rank)
    ['none', 'reference', 'alpha', 'zeta']
    """
    return (BASELINES.index(name) if name in BASELINES else 99, name)


class SimulationError(StopwiseError):
    """The simulation could not run (bad policy name, empty world, ...)."""


def resolve_policy(name: str) -> tuple[str, dict[str, Any]]:
    """Map a CLI policy name or alias to ``(make_policy name, params)``."""
    if name in ALIASES:
        n, p = ALIASES[name]
        return n, dict(p)
    if name.startswith("static-"):
        try:
            tau = float(name.removeprefix("static-"))
        except ValueError:
            raise SimulationError(f"policy {name!r}: static-<tau> needs a number, e.g. static-0.95") from None
        if not 0.0 <= tau <= 1.0:
            raise SimulationError(f"policy {name!r}: threshold must be in [0, 1]")
        return "static", {"threshold": tau}
    return name, {}


def build_policy(name: str, config: Config | None = None) -> Any:
    """A fresh policy object for ``name`` (alias-aware). When ``name`` is the
    config's own ``policy.name``, its ``policy.params`` apply too."""
    from stopwise.policies import make_policy

    pname, params = resolve_policy(name)
    if config is not None and name == config.policy.name:
        params = {**config.policy.params, **params}
    try:
        return make_policy(pname, **params)
    except ValueError as exc:
        raise SimulationError(f"policy {name!r}: {exc} (aliases: none, static-<tau>)") from None


class ThresholdTable:
    """What a simulated inferencer sees: the latest visible record per context
    key, looked up exactly as the real inferencer's table does
    (:func:`stopwise.daemon.lookup.lookup`: fallback chain, expiry, and with
    no record in force the default threshold at exploration rate
    ``default_explore_rate``, :data:`~stopwise.daemon.lookup.NO_RECORD_EXPLORE_RATE`
    = 0 unless given). Change ``records`` only through :meth:`apply` (it
    empties the lookup cache)."""

    __slots__ = ("records", "default_threshold", "default_explore_rate", "_cache")

    def __init__(self, default_threshold: float, default_explore_rate: float = NO_RECORD_EXPLORE_RATE) -> None:
        self.records: dict[str, ThresholdRecord] = {}
        self.default_threshold = default_threshold
        self.default_explore_rate = default_explore_rate
        self._cache: dict[str, tuple] = {}

    def apply(self, record: ThresholdRecord) -> None:
        cur = self.records.get(record.context)
        if cur is None or record.version >= cur.version or record.issued_at >= cur.issued_at:
            self.records[record.context] = record
            self._cache.clear()

    def lookup(self, key: str, now: float) -> tuple[float, float, int, str]:
        """(threshold, explore_rate, version, source) in force for ``key`` at ``now``."""
        return lookup(self.records, key, now, self.default_threshold, self.default_explore_rate, self._cache)


@dataclass
class RunResult:
    policy: str
    outcomes: list[Outcome]
    thresholds: list[dict]
    elapsed_s: float
    stats: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Requests simulated per second of wall time."""
        return len(self.outcomes) / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def trusted_constructor(cls: type) -> Callable[..., Any]:
    """A fast constructor for records the simulator builds itself from
    validated world data: same result as ``cls.model_construct(**all_fields)``
    (every field must be given; no validation), at a fraction of its cost.

    >>> mk = trusted_constructor(FeedbackEvent)
    >>> ev = mk(v=1, request_id="r", ts=1.0, em=1, gold_answer_hash=None, source="sim", weight=1.0)
    >>> ev == FeedbackEvent(request_id="r", ts=1.0, em=1, source="sim")
    True
    """
    names = frozenset(cls.model_fields)
    new = cls.__new__
    setattr_ = object.__setattr__

    def make(**values: Any) -> Any:
        if values.keys() != names:
            raise TypeError(f"{cls.__name__}: trusted construction needs exactly {sorted(names)}")
        m = new(cls)
        setattr_(m, "__dict__", values)
        setattr_(m, "__pydantic_fields_set__", set(names))
        setattr_(m, "__pydantic_extra__", {})
        setattr_(m, "__pydantic_private__", None)
        return m

    return make


_construct_inf = trusted_constructor(InferenceEvent)
_construct_fb = trusted_constructor(FeedbackEvent)


def simulate(requests: Sequence, config: Config, policy: str = "reference", *,
             publish_delay: float = 1.0, core: Any = None,
             clock: Callable[[], float] = time.perf_counter) -> RunResult:
    """Run one policy closed-loop over ``requests`` (ts-sorted
    :class:`~stopwise.sim.world.WorldRequest`). ``core`` may be passed (a
    :class:`Core`), else one is built with :func:`build_policy`."""
    if not requests:
        raise SimulationError("the world has no requests")
    if publish_delay < 0:
        raise SimulationError("publish delay must be >= 0")
    if core is None:
        from stopwise.daemon.core.engine import Core

        core = Core(config, policy=build_policy(policy, config))
    keyer = ContextKeyer(config.context.dimensions)
    table = ThresholdTable(config.context.default_threshold)
    interval = config.publish.interval_s
    idle_stride = max(interval, config.publish.record_ttl_s / 8)
    pending: list[tuple[float, int, int, Any]] = []   # (time, seq, kind, payload); kind 0 = record visible, 1 = feedback
    seq = 0
    thresholds: list[dict] = []
    outcomes: list[Outcome] = []
    keys: dict[tuple, str] = {}
    next_tick = requests[0].ts + interval
    on_inf, on_fb, tick = core.on_inference, core.on_feedback, core.tick
    push, pop = heapq.heappush, heapq.heappop
    n_feedback = n_unlabelled = 0

    def drain(until: float) -> None:
        nonlocal next_tick, seq
        while True:
            if pending and pending[0][0] <= next_tick:
                if pending[0][0] > until:
                    return
                t, _, kind, payload = pop(pending)
                if kind == 0:
                    table.apply(payload)
                else:
                    on_fb(payload, t)
                continue
            if next_tick > until:
                return
            t = next_tick
            next_tick += interval
            if not pending and until - next_tick > idle_stride:
                # an idle stretch (no traffic, nothing pending): tick every
                # idle_stride instead of every interval, staying on the grid
                next_tick += (idle_stride // interval - 1) * interval
            for d in tick(t):
                rec = d.record
                thresholds.append({"t": t, "visible_at": t + publish_delay, **rec.model_dump(mode="json")})
                seq += 1
                push(pending, (t + publish_delay, seq, 0, rec))

    started = clock()
    for req in requests:
        ts = req.ts
        if (pending and pending[0][0] <= ts) or next_tick <= ts:
            drain(ts)
        ctx = req.context
        ck = tuple(ctx.items())
        key = keys.get(ck)
        if key is None:
            key = keys[ck] = keyer.key(ctx)
        thr, rate, version, _ = table.lookup(key, ts)
        cps = req.checkpoints
        last = len(cps) - 1
        explored, prop = draw(req.request_id, rate)
        si = last if explored else stop_index(cps, thr)
        cp = cps[si]
        full = cps[last]
        ev = _construct_inf(
            v=1, request_id=req.request_id, ts=ts, context=ctx, features=req.features,
            threshold=thr, threshold_version=version, explore=explored,
            propensity=prop, stop_index=si, tokens_used=cp[0],
            tokens_budget=full[0], checkpoints=cps if (explored or si == last) else cps[:si + 1],
            complete=explored or si == last,
        )
        on_inf(ev, ts)
        gold = req.gold_answer_hash
        fb = req.feedback
        override = fb.em_override
        if gold is not None:
            em = int(cp[2] == gold)
            em_full = int(full[2] == gold)
        else:
            em = em_full = override
        if fb.present:
            if override is not None:
                label, gold_sent = override, None
            else:
                label, gold_sent = em, gold
            if label is None:
                n_unlabelled += 1
            else:
                seq += 1
                fts = ts + fb.delay_s
                push(pending, (fts, seq, 1, _construct_fb(
                    v=1, request_id=req.request_id, ts=fts, em=label, gold_answer_hash=gold_sent,
                    source="sim", weight=1.0)))
                n_feedback += 1
        outcomes.append(Outcome(req.request_id, key, thr, explored, si, cp[0], full[0], cp[2], em, em_full, ts))
    drain(max(requests[-1].ts, max((p[0] for p in pending), default=0.0)) + interval)
    elapsed = clock() - started
    stats = {"requests": len(outcomes), "feedback_sent": n_feedback, "feedback_unlabelled": n_unlabelled,
             "records_published": len(thresholds), "elapsed_s": elapsed,
             "requests_per_s": len(outcomes) / elapsed if elapsed > 0 else None}
    try:
        stats["core"] = dict(core.controller.stats())
    except Exception:  # noqa: BLE001 - stats are informative only
        pass
    return RunResult(policy, outcomes, thresholds, elapsed, stats)


def write_run(result: RunResult, out: str | Path, summary: dict, oracle: dict | None = None) -> Path:
    """Write ``outcomes.jsonl``, ``thresholds.jsonl``, ``summary.json`` (and
    ``oracle.json``) into ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "outcomes.jsonl", "w", encoding="utf-8") as fh:
        for o in result.outcomes:
            fh.write(json.dumps(o.public(), separators=(",", ":")))
            fh.write("\n")
    with open(d / "thresholds.jsonl", "w", encoding="utf-8") as fh:
        for r in result.thresholds:
            fh.write(json.dumps(r, separators=(",", ":")))
            fh.write("\n")
    (d / "summary.json").write_text(json.dumps({**summary, "run": result.stats}, indent=2) + "\n")
    if oracle is not None:
        (d / "oracle.json").write_text(json.dumps(oracle) + "\n")
    return d
