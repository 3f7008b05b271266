"""Per-batch processing: decode, hand to the core, produce the outputs.

inference/feedback partition p -> ``join/p`` Joiner -> labelled examples
produced to the examples topic keyed by their context key;
examples partition p -> ``learn/p`` Controller.learn. Undecodable input goes
to the DLQ and the loop goes on. No decisions here: all logic is in the core.
"""

from __future__ import annotations

import structlog

from ..core.examples import LabelledExample
from ..errors import DecodeError
from ..records import decode_feedback, decode_inference
from .kafka_io import owner_partition
from .shards import shard_name

log = structlog.get_logger("stopwise.shell.processing")

class Processor:
    def __init__(self, daemon, dlq) -> None:
        self.d = daemon
        self.dlq = dlq
        self.consumed = self.joined = self.learned = self.duplicates = 0
        self._consumed_metric: dict[str, object] = {}
        self._example_keys: dict[str, tuple[bytes, int]] = {}
        self._join_totals = {"evicted": 0, "expired_no_feedback": 0, "expired_no_inference": 0}

    def process(self, batch, now: float) -> None:
        roles = self.d.roles
        for tp, recs in batch.items():
            if not recs:
                continue
            role = roles.get(tp.topic)
            if role == "examples":
                self._learn(tp, recs, now)
            elif role is not None:
                self._join(tp, role, recs, now)
            self.consumed += len(recs)
            child = self._consumed_metric.get(tp.topic)
            if child is None:
                child = self._consumed_metric[tp.topic] = self.d.metrics.consumed.labels(topic=tp.topic)
            child.inc(len(recs))

    def _shard(self, kind: str, partition: int):
        shard = self.d.shards.get(shard_name(kind, partition))
        if shard is None:  # not expected (assignment creates shards); keep the record anyway
            shard = self.d._restore(shard_name(kind, partition))
            self.d.shards[shard.name] = shard
        return shard

    def _join(self, tp, role: str, recs, now: float) -> None:
        cfg = self.d.cfg
        shard = self._shard("join", tp.partition)
        joiner = shard.obj
        if role == "inference":
            decode, add = decode_inference, joiner.add_inference
        else:
            decode, add = decode_feedback, joiner.add_feedback
        max_bytes, max_cps = cfg.limits.max_record_bytes, cfg.limits.max_checkpoints
        send, topic = self.d.producer.send, cfg.topics.examples
        reject = self.dlq.reject
        keys = self._example_keys
        joined = 0
        for rec in recs:
            try:
                ev = decode(rec.value, max_bytes)
            except DecodeError as exc:
                reject(rec, exc.reason, exc.detail)
                continue
            if role == "inference" and len(ev.checkpoints) > max_cps:
                reject(rec, "too_large", f"{len(ev.checkpoints)} checkpoints > limit {max_cps}")
                continue
            try:
                examples = add(ev, now)
            except Exception as exc:  # a core bug must not stop the loop or lose the record
                log.exception("join_failed", topic=rec.topic, partition=rec.partition, offset=rec.offset)
                reject(rec, "processing_error", repr(exc))
                continue
            for ex in examples:
                key_part = keys.get(ex.context_key)
                if key_part is None:  # few distinct context keys: skip the pure-Python murmur2 per record
                    if len(keys) >= 10_000:
                        keys.clear()
                    k = ex.context_key.encode()
                    key_part = keys[ex.context_key] = (k, owner_partition(ex.context_key, self.d._n_examples))
                send(topic, key=key_part[0], value=ex.to_bytes(), partition=key_part[1])
            joined += len(examples)
        shard.advance(tp.topic, tp.partition, recs[-1].offset)
        if joined:
            self.joined += joined
            self.d.metrics.examples_joined.inc(joined)

    def _learn(self, tp, recs, now: float) -> None:
        shard = self._shard("learn", tp.partition)
        learn = shard.obj.learn
        from_bytes = LabelledExample.from_bytes
        reject = self.dlq.reject
        learned = dup = 0
        for rec in recs:
            try:
                ex = from_bytes(rec.value)
            except DecodeError as exc:
                reject(rec, exc.reason, exc.detail)
                continue
            try:
                if learn(ex, now):
                    learned += 1
                else:
                    dup += 1
            except Exception as exc:
                log.exception("learn_failed", topic=rec.topic, partition=rec.partition, offset=rec.offset)
                reject(rec, "processing_error", repr(exc))
        shard.advance(tp.topic, tp.partition, recs[-1].offset)
        m = self.d.metrics
        if learned:
            self.learned += learned
            m.examples_learned.inc(learned)
        if dup:
            self.duplicates += dup
            m.examples_duplicate.inc(dup)

    def refresh_gauges(self) -> None:
        """Gauges and counters derived from shard state (after a tick or a rebalance)."""
        m = self.d.metrics
        pending = unique = 0
        totals = dict.fromkeys(self._join_totals, 0)
        for shard in list(self.d.shards.values()):
            if shard.kind == "join":
                pending += len(shard.obj)
                st = shard.obj.stats
                for k in totals:
                    totals[k] += int(getattr(st, k, 0))
            else:
                unique += int(shard.obj.unique_examples)
        m.join_pending.set(pending)
        m.unique_examples.set(unique)
        for k, v in totals.items():
            delta = v - self._join_totals[k]
            if delta > 0:
                if k == "evicted":
                    m.join_evicted.inc(delta)
                else:
                    m.join_expired.labels(kind=k.removeprefix("expired_")).inc(delta)
        self._join_totals = totals
