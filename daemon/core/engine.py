"""The controller (learn + decide + guard) and the Core (Joiner + Controller).

``Controller.learn(example, now)``: dedupe by request_id (the last
``min(join.max_entries, DEDUPE_CAP)`` learned ids are remembered); roll the context
key up through the :class:`~stopwise.daemon.context.ContextRegistry`
(cardinality cap); evaluate the counterfactual; update the estimator for
the (rolled-up) key AND every ancestor up to ``*`` (so parents pool their
children and ``*`` is always a fallback); feed the River model (a few
checkpoints per example; past a context's warm-up only a seeded share of its
examples, see :mod:`.risk_model`); record the served outcome for the circuit
breaker; let the policy learn (for the key and its ancestors).

``Controller.tick(now)``: for every known context (sorted, so deterministic)
build a :class:`~stopwise.policies.base.View`, ask the policy, apply the
:mod:`.guardrails` and publish a :class:`Decision` when it is the first
record of the context, the threshold moved by at least
``guardrails.hysteresis``, the exploration rate moved by at least
``max(hysteresis, 20% of the old rate)``, the guardrail reason changed to or
from ``kill_switch``/``circuit_breaker``, or the last record is past half
of ``publish.record_ttl_s`` (a refresh, so records never expire while the
daemon lives). Versions grow by one per context per publication. The
published exploration rate is the policy's, clipped to
``[exploration.min_rate, exploration.max_rate]``.

Global budget mode (``budget.mode == "global"``): see
:func:`~.allocation.allocate_global` (re-exported here).

>>> from stopwise.daemon.config import Config
>>> ctl = Controller(Config())
>>> [d.record.context for d in ctl.tick(now=0.0)], ctl.table()["*"].threshold
(['*'], 1.0)
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import structlog

from stopwise.policies.base import Outcome, View

from ..config import Config
from ..context import ROOT, ContextRegistry, parents
from ..records import FeedbackEvent, InferenceEvent, ThresholdRecord
from ..stoprule import NO_EARLY_STOP
from .allocation import allocate_global
from .counterfactual import evaluate, is_labelled, with_no_stop
from .estimator import Estimator, TauStats
from .examples import LabelledExample
from .guardrails import Guardrails
from .join import Joiner
from .risk_model import RiskModel
from . import statecodec
from .seen import RecentIds

__all__ = ["Controller", "Core", "Decision", "allocate_global", "dump_state", "load_state"]

log = structlog.get_logger("stopwise.core")

RECENT_PER_CONTEXT = 16
DEDUPE_CAP = 100_000
"""Request ids the controller remembers to refuse a second learning (64-bit
hashes, 1.6 MB pickled at the cap): covers re-emissions after a restart."""
AWAITING_CAP = 50_000
"""Unlabelled complete runs remembered (key, clock stamps, weight) so that
a late label can refine their evidence; beyond it, the oldest keep D."""
UNLABELLED_SUFFIX = "\x1fu"
FORCED = ("kill_switch", "circuit_breaker")


@dataclass(frozen=True)
class Decision:
    """One publication: the (unsigned) record, what it replaces, and why."""

    record: ThresholdRecord
    previous_threshold: float | None
    reason: str

    def audit(self, record_fields: dict | None = None) -> dict:
        """The audit-topic record: the record's fields (or ``record_fields``,
        e.g. as published with version and signature) plus previous_threshold."""
        d = dict(record_fields) if record_fields is not None else self.record.model_dump(mode="json")
        d["previous_threshold"] = self.previous_threshold
        return d


@lru_cache(maxsize=4096)
def _chain(key: str) -> tuple[str, ...]:
    """``parents(key)`` as a tuple, memoised (a pure function of the key)."""
    return tuple(parents(key))


def _policy_from(config: Config):
    from stopwise.policies import make_policy

    return make_policy(config.policy.name, **dict(config.policy.params))


class Controller:
    """Learn + decide + guard for the contexts it owns (see module doc)."""

    def __init__(self, config: Config, policy=None) -> None:
        self._own_policy = policy is None
        self.policy = _policy_from(config) if policy is None else policy
        self.registry = ContextRegistry(config.context.max_contexts, config.context.min_support)
        self.taus = with_no_stop(config.grid.taus)
        self.estimator = Estimator(self.taus, config.estimator.half_life, config.budget.confidence,
                                   config.estimator.prior_strength)
        self.model = RiskModel(config.estimator.seed, config.estimator.learning_rate,
                               enabled=config.estimator.model != "none")
        self.guard = Guardrails(config.guardrails, config.context.default_threshold, config.budget.confidence)
        self.config = config
        self._learned = RecentIds(min(config.join.max_entries, DEDUPE_CAP))
        self._awaiting_cap = min(config.join.max_entries, AWAITING_CAP)
        self._awaiting: OrderedDict[str, tuple[str, tuple[int, ...], float]] = OrderedDict()
        self._recent: dict[str, deque] = {}
        self._prior: dict[str, tuple[float, ...] | None] = {}
        self._prior_dirty: set[str] = set()
        self._records: dict[str, ThresholdRecord] = {}
        self._traffic: dict[str, float] = {}
        self._kill = False
        self.unique_examples = 0      # unlabelled evidence and labelled examples, each once
        self.labelled_examples = 0
        self.duplicates = 0
        self.load = 0.0
        self.estimator.touch(ROOT)

    # -- learning -------------------------------------------------------
    def learn(self, example: LabelledExample, now: float) -> bool:
        """Learn one example, labelled or not; ``False`` (ignored) if it was
        already learned (request_id, and whether it is the unlabelled
        evidence or the labelled example). A ``followup`` (the label of a
        run whose unlabelled evidence was learned) only refines that evidence."""
        rid = example.request_id
        labelled = is_labelled(example)
        dkey = rid if labelled else rid + UNLABELLED_SUFFIX
        if dkey in self._learned or (not labelled and rid in self._learned):
            # (an unlabelled copy after its labelled example, as a replay in the other order gives)
            self.duplicates += 1
            return False
        self._learned.add(dkey, now)
        self.unique_examples += 1
        if labelled:
            self.labelled_examples += 1
        if labelled and (example.followup or rid + UNLABELLED_SUFFIX in self._learned):
            # (a replay may join the halves in the other order: its evidence is learned already)
            return self._refine(example)
        key = self.registry.observe(example.context_key)
        cf = evaluate(example, self.taus)
        chain = _chain(key)
        stamps = self.estimator.update_many(chain, cf)
        if cf.complete and not labelled:
            awaiting = self._awaiting
            awaiting[rid] = (key, stamps, cf.weight)
            if len(awaiting) > self._awaiting_cap:
                awaiting.popitem(last=False)
        self._learn_rest(example, cf, key, chain, Outcome(example, cf))
        traffic = self._traffic
        for k in chain:
            traffic[k] = traffic.get(k, 0.0) + 1.0
        return True

    def _refine(self, example: LabelledExample) -> bool:
        """The label of a run learned unlabelled: Z replaces D in the direct
        sums (when the run is still remembered), then the label-only learners."""
        cf = evaluate(example, self.taus)
        entry = self._awaiting.pop(example.request_id, None)
        if entry is not None:
            key, stamps, weight = entry
            if cf.complete and cf.disagree is not None:
                self.estimator.refine(_chain(key), stamps, weight, [z - d for z, d in zip(cf.loss, cf.disagree)])
        else:
            key = self.registry.resolve(example.context_key)
        self._learn_rest(example, cf, key, _chain(key), Outcome(example, cf, followup=True))
        return True

    def _learn_rest(self, example: LabelledExample, cf, key: str, chain, outcome: Outcome) -> None:
        """The River model and the breaker (labelled complete runs), the
        recent runs behind the model prior, the policy."""
        if cf.labelled:
            self.model.learn(example, cf, key)
            if cf.weight > 0.0:
                observe, served, weight = self.guard.observe, cf.served_loss, cf.weight
                for k in chain:
                    observe(k, served, weight)
        if cf.complete and not outcome.followup:
            recent = self._recent
            for k in chain:
                dq = recent.get(k)
                if dq is None:
                    dq = recent[k] = deque(maxlen=RECENT_PER_CONTEXT)
                dq.append(example)
            self._prior_dirty.update(chain)
        learn_one = self.policy.learn_one
        for k in chain:
            learn_one(k, outcome)

    # -- deciding -------------------------------------------------------
    def _stats(self, key: str, memo: dict | None = None) -> TauStats:
        if key in self._prior_dirty:
            self._prior_dirty.discard(key)
            # the model prior only matters while the context is data-poor
            if self.estimator.n_eff(key) < 10 * max(self.config.estimator.prior_strength, 1.0) or key not in self._prior:
                self._prior[key] = self.model.prior(list(self._recent.get(key, ())), self.taus, memo)
        rec = self._records.get(key)
        ref = rec.threshold if rec is not None else self.config.context.default_threshold
        return self.estimator.stats(key, self._prior.get(key), ref)

    def _budgets(self, keys: list[str], stats: dict[str, TauStats]) -> dict[str, float]:
        cfg = self.config
        if cfg.budget.mode != "global":
            return {k: cfg.budget_for(k) for k in keys}
        ancestors = {a for o in keys for a in _chain(o)[1:]}
        leaves = [k for k in keys if k != ROOT and k not in ancestors]
        if not leaves:
            return {k: cfg.budget_for(k) for k in keys}
        total_traffic = sum(self._traffic.get(k, 0.0) for k in leaves) or 1.0
        shares = {k: self._traffic.get(k, 0.0) / total_traffic for k in leaves}
        caps = {k: cfg.budget.per_context.get(k, 1.0) for k in leaves}
        alloc = allocate_global({k: stats[k] for k in leaves}, shares, cfg.budget.em_drop, caps)
        out = {k: cfg.budget_for(k) for k in keys}
        out.update({k: max(v, 1e-6) for k, v in alloc.items()})
        return out

    def known_contexts(self) -> list[str]:
        return sorted(set(self.estimator.keys()) | {ROOT})

    def tick(self, now: float) -> list[Decision]:
        """Decide every known context; return the publications (see module doc)."""
        cfg = self.config
        keys = self.known_contexts()
        memo: dict = {}   # model predictions shared by the contexts of this tick
        stats = {}
        for k in keys:
            try:
                stats[k] = self._stats(k, memo)
            except Exception:  # one broken context is logged and skipped, never the tick (issue 13)
                log.exception("tick_context_failed", context=k, stage="stats")
        keys = [k for k in keys if k in stats]
        budgets = self._budgets(keys, stats)
        out: list[Decision] = []
        kill = self._kill or cfg.guardrails.kill_switch
        critical = set(getattr(self.policy, "critical", ()) or ())
        for key in keys:
            try:
                decision = self._decide(key, stats[key], budgets[key], kill, key in critical, now)
            except Exception:  # one broken context is logged and skipped, never the tick (issue 13)
                log.exception("tick_context_failed", context=key, stage="decide")
                continue
            if decision is not None:
                out.append(decision)
        return out

    def _decide(self, key: str, st: TauStats, budget: float, kill: bool, critical: bool,
                now: float) -> Decision | None:
        """Policy, guardrails and the publication rule for one context; the
        new record (kept as the context's latest), or None if nothing changed."""
        cfg = self.config
        ex = cfg.exploration
        prev = self._records.get(key)
        current = prev.threshold if prev else cfg.context.default_threshold
        view = View(key, st, budget, cfg.budget.confidence, current,
                    prev.explore_rate if prev else ex.initial_rate, ex.min_rate, ex.max_rate, ex.initial_rate,
                    cfg.context.default_threshold, cfg.policy.integral_gain, self.load, critical)
        prop = self.policy.decide(key, view, now)
        thr, guard_reason = self.guard.apply(key, prop.threshold, current=current, budget=budget,
                                             n_eff=st.n_evidence, now=now, kill=kill)
        rate = min(ex.max_rate, max(ex.min_rate, prop.explore_rate))
        reason = guard_reason if guard_reason in FORCED or guard_reason == "min_evidence" else prop.reason
        if guard_reason in ("clamp", "step"):
            reason = f"{prop.reason}; {guard_reason}"
        if not self._changed(prev, thr, rate, guard_reason, now):
            return None
        idx = st.nearest(thr)
        values = (thr, rate, st.loss[idx], st.ucb[idx], st.cost[idx], st.n_eff)
        if not all(map(math.isfinite, values)):  # never publish (or fail on) a non-finite estimate
            log.warning("tick_context_skipped", context=key, why="non-finite estimate",
                        values=[repr(float(v)) for v in values])
            return None
        rec = ThresholdRecord(
            context=key, threshold=thr, explore_rate=rate, version=(prev.version + 1) if prev else 1,
            issued_at=now, expires_at=now + cfg.publish.record_ttl_s, policy=self.policy.name,
            est_loss=min(1.0, max(0.0, st.loss[idx])), est_loss_ucb=min(1.0, max(0.0, st.ucb[idx])),
            est_savings=1.0 - st.cost[idx], n=st.n_eff, reason=reason,
        )
        self._records[key] = rec
        return Decision(rec, prev.threshold if prev else None, reason)

    def _changed(self, prev: ThresholdRecord | None, thr: float, rate: float, guard_reason: str, now: float) -> bool:
        if prev is None:
            return True
        h = self.config.guardrails.hysteresis
        was_forced = prev.reason in FORCED
        if guard_reason in FORCED:
            return not (prev.reason == guard_reason and prev.threshold == thr)
        if was_forced:  # leaving the kill switch / breaker is always announced
            return True
        if thr != prev.threshold and (abs(thr - prev.threshold) >= h or thr == NO_EARLY_STOP):
            return True
        if abs(rate - prev.explore_rate) >= max(h, 0.2 * prev.explore_rate):
            return True
        return now >= prev.issued_at + self.config.publish.record_ttl_s / 2

    # -- operations -----------------------------------------------------
    def table(self) -> dict[str, ThresholdRecord]:
        """Latest record per context key."""
        return dict(self._records)

    def set_kill_switch(self, on: bool) -> None:
        """On: the next tick publishes 1.0 for every known context (reason kill_switch)."""
        self._kill = bool(on)

    def set_load(self, load: float) -> None:
        """Fleet load in [0, 1], passed to policies in the view (load_aware)."""
        self.load = min(1.0, max(0.0, float(load)))

    def reconfigure(self, config: Config) -> None:
        """Apply new settings, keep learned state. A new grid or context
        dimensions restart the estimates (they are indexed by them); a new
        policy name/params builds a fresh policy (when built from config)."""
        old = self.config
        self.config = config
        if tuple(config.grid.taus) != tuple(old.grid.taus):
            self.taus = with_no_stop(config.grid.taus)
            self.estimator = Estimator(self.taus, config.estimator.half_life, config.budget.confidence,
                                       config.estimator.prior_strength)
            self._prior.clear()
            self._awaiting.clear()   # their clock stamps belong to the old estimator
            log.info("estimates_reset", why="grid changed")
        else:
            self.estimator.reconfigure(config.estimator.half_life, config.budget.confidence,
                                       config.estimator.prior_strength)
        self.registry.max_contexts = config.context.max_contexts
        self.registry.min_support = config.context.min_support
        self.model.enabled = config.estimator.model != "none"
        self.guard.reconfigure(config.guardrails, config.context.default_threshold, config.budget.confidence)
        if self._own_policy and (config.policy.name != old.policy.name or config.policy.params != old.policy.params):
            self.policy = _policy_from(config)
        self.estimator.touch(ROOT)

    def stats(self) -> dict[str, float]:
        return {
            "learned": float(self.unique_examples),
            "labelled": float(self.labelled_examples),
            "duplicates": float(self.duplicates),
            "contexts": float(len(self.known_contexts())),
            "published": float(len(self._records)),
            "rolled_up": float(self.registry.rolled_up),
            "model_checkpoints": float(self.model.n_learned),
            "kill_switch": float(self._kill or self.config.guardrails.kill_switch),
        }


class Core:
    """Joiner + the daemon's learn shards in one object (simulator,
    single-process path): ``controller`` is a
    :class:`~.sharded.ShardedControllers` of ``topics.examples_partitions``
    Controllers, routed and owner-filtered exactly as the daemon's learn
    shards are (``policy``, if given, serves the first shard; the others get
    deep copies of it)."""

    def __init__(self, config: Config, policy=None) -> None:
        from .sharded import ShardedControllers, policy_copies

        self.config = config
        self.joiner = Joiner.from_config(config)
        self.controller = ShardedControllers(config, policy_copies(policy))

    def on_inference(self, ev: InferenceEvent, now: float) -> list[LabelledExample]:
        exs = self.joiner.add_inference(ev, now)
        for ex in exs:
            self.controller.learn(ex, now)
        return exs

    def on_feedback(self, ev: FeedbackEvent, now: float) -> list[LabelledExample]:
        exs = self.joiner.add_feedback(ev, now)
        for ex in exs:
            self.controller.learn(ex, now)
        return exs

    def tick(self, now: float) -> list[Decision]:
        self.joiner.expire(now)
        return self.controller.tick(now)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.joiner.reconfigure(config)
        self.controller.reconfigure(config)


def dump_state(obj: Any) -> bytes:
    """A Joiner, Controller or Core as versioned plain data (the snapshot
    payload; :mod:`.statecodec`, not pickle)."""
    return statecodec.encode(obj)


def load_state(data: bytes) -> Any:
    """Inverse of :func:`dump_state`; decoding cannot run code
    (:class:`~.statecodec.StateCodecError` for anything else, a pickle included)."""
    return statecodec.decode(data)
