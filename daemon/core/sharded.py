"""The daemon's learn composition as a pure object: one
:class:`~.engine.Controller` per examples partition, examples routed to the
partition their context key hashes to, and each shard publishing only the
records of the context keys it owns.

In the daemon (:mod:`stopwise.daemon.shell`), a joined example is produced to
examples partition :func:`owner_partition` ``(example.context_key, n)`` and
learned by that partition's learn shard, which updates the key AND every
ancestor up to ``*`` from the examples it sees. So every shard holds its
own partial view of ``*`` and of the shared parents, and a tick of shard
``p`` decides every context it knows but publishes only :func:`owned` ones:
those whose key hashes to ``p``. :class:`ShardedControllers` is exactly
that, without Kafka, for the simulator (``Core``) and the tests; the
runner uses the same :func:`owned` rule.

``owner_partition`` (in :mod:`stopwise.daemon.context`, re-exported here and
by ``shell.kafka_io``) is Kafka's default partitioner: murmur2 of the key's
UTF-8 bytes, sign bit cleared, modulo the partition count, implemented
without a Kafka client so that the pure core does not need one.

>>> owner_partition("task=qa", 3) == owner_partition("task=qa", 3) < 3, owner_partition("*", 1)
(True, 0)
>>> murmur2(b"task=qa"), murmur2(b"*")          # the values Kafka's partitioner computes
(3407104383, 496342775)
>>> from stopwise.daemon.config import parse_config
>>> sc = ShardedControllers(parse_config({"topics": {"examples_partitions": 2}}))
>>> len(sc.shards), [d.record.context for d in sc.tick(now=0.0)]   # '*' is published once, by its owner
(2, ['*'])
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

from ..config import Config
from ..context import murmur2, owner_partition
from .engine import Controller, Decision
from .examples import LabelledExample

__all__ = ["ShardedControllers", "murmur2", "owned", "owner_partition", "policy_copies"]


def owned(decisions: Iterable[Decision], partition: int, n_partitions: int) -> list[Decision]:
    """The decisions learn shard ``partition`` (of ``n_partitions``) publishes:
    those of the context keys it owns. Every shard knows ``*`` and the
    ancestors of its contexts; only the owner publishes each."""
    return [d for d in decisions if owner_partition(d.record.context, n_partitions) == partition]


def policy_copies(policy: Any | None) -> Callable[[], Any] | None:
    """A policy factory giving ``policy`` itself first, then independent deep
    copies of it as it is now (one per further shard: shards never share a
    policy's per-context state); ``None`` for ``None`` (each Controller then
    builds its own from the config)."""
    if policy is None:
        return None
    spare = copy.deepcopy(policy)  # taken before the first shard starts learning
    given = [policy]
    return lambda: given.pop() if given else copy.deepcopy(spare)


class ShardedControllers:
    """``n`` learn shards (default ``config.topics.examples_partitions``) as
    the daemon composes them (module doc). ``policy_factory()`` is called
    once per shard; ``None``: each Controller builds its policy from the config."""

    def __init__(self, config: Config, policy_factory: Callable[[], Any] | None = None,
                 n_shards: int | None = None) -> None:
        n = config.topics.examples_partitions if n_shards is None else int(n_shards)
        if n < 1:
            raise ValueError(f"n_shards: need at least one learn shard, got {n}")
        self.n = n
        self.shards = [Controller(config, None if policy_factory is None else policy_factory()) for _ in range(n)]

    def owner(self, context_key: str) -> Controller:
        """The shard that learns ``context_key``'s examples and publishes its record."""
        return self.shards[owner_partition(context_key, self.n)]

    def learn(self, example: LabelledExample, now: float) -> bool:
        """Learn ``example`` in the shard its (raw) context key hashes to."""
        return self.shards[owner_partition(example.context_key, self.n)].learn(example, now)

    def tick(self, now: float) -> list[Decision]:
        """Tick every shard (each keeps its own decisions, as in the daemon);
        return only the decisions each shard owns, shard by shard."""
        out: list[Decision] = []
        for p, ctl in enumerate(self.shards):
            out.extend(owned(ctl.tick(now), p, self.n))
        return out

    def table(self) -> dict[str, Any]:
        """Latest published record per context key (each from its owner)."""
        out: dict[str, Any] = {}
        for p, ctl in enumerate(self.shards):
            out.update((k, r) for k, r in ctl.table().items() if owner_partition(k, self.n) == p)
        return out

    def known_contexts(self) -> list[str]:
        return sorted({k for ctl in self.shards for k in ctl.known_contexts()})

    @property
    def unique_examples(self) -> int:
        return sum(ctl.unique_examples for ctl in self.shards)

    @property
    def duplicates(self) -> int:
        return sum(ctl.duplicates for ctl in self.shards)

    def set_kill_switch(self, on: bool) -> None:
        for ctl in self.shards:
            ctl.set_kill_switch(on)

    def set_load(self, load: float) -> None:
        for ctl in self.shards:
            ctl.set_load(load)

    def reconfigure(self, config: Config) -> None:
        """Reconfigure every shard; the number of shards stays (the daemon's
        examples topic keeps its partitions across a reload)."""
        for ctl in self.shards:
            ctl.reconfigure(config)

    def stats(self) -> dict[str, float]:
        """The shards' :meth:`Controller.stats` summed; ``contexts`` and
        ``published`` count distinct keys; ``shards`` their number."""
        per = [ctl.stats() for ctl in self.shards]
        out = {k: float(sum(s.get(k, 0.0) for s in per)) for k in per[0]}
        out["contexts"] = float(len(self.known_contexts()))
        out["published"] = float(len(self.table()))
        out["kill_switch"] = float(max(s.get("kill_switch", 0.0) for s in per))
        out["shards"] = float(self.n)
        return out
