"""Per-batch processing: decode, hand to the core, produce the outputs.

inference/feedback partition p -> ``join/p`` Joiner -> examples (the
unlabelled evidence of each inference event as it arrives, the labelled
example when its feedback joins it) produced to the examples topic keyed by their context key, batched: one
record per context key per polled batch (at most ``EXAMPLES_PER_RECORD``
examples / about ``EXAMPLE_RECORD_BYTES`` each), sent before ``process``
returns, so before any checkpoint; examples partition p -> ``learn/p``
Controller.learn. Undecodable input goes to the DLQ and the loop goes on.
An input record on another partition than its key's (murmur2) is re-routed
there, a keyless one dead-lettered (``no_key``): see :mod:`.reroute`.
No decisions here: all logic is in the core.

When this instance owns the learn shard of a batch's partition, it learns
the examples as it produces them and tags the record with the shard's
incarnation (header ``stopwise.learned``); reading the record back, the
same incarnation skips it without decoding. Any other reader (another
instance after a rebalance, this one after a restart) decodes and learns it,
and the Controller's request_id dedupe drops what the restored state already
holds. So a learn shard's state reflects every example before its position
and possibly some after it, never one twice.
"""

from __future__ import annotations

import time

import structlog

from ..core.counterfactual import is_labelled
from ..core.examples import decode_examples, encode_examples
from ..errors import DecodeError
from ..records import decode_feedback, decode_inference
from .kafka_io import owner_partition
from .reroute import Rerouter
from .shards import shard_name

log = structlog.get_logger("stopwise.shell.processing")

LEARNED_HEADER = "stopwise.learned"
EVICTION_WARN_EVERY_S = 60.0
"""At most one ``join_evicting`` warning per this many seconds (with the count and rate since the last)."""
EXAMPLES_PER_RECORD = 200
EXAMPLE_RECORD_BYTES = 256 * 1024
"""Caps of one examples-topic record (the size is estimated from the input
records' sizes), well under the broker's default 1 MB message limit."""

class Processor:
    def __init__(self, daemon, dlq) -> None:
        self.d = daemon
        self.dlq = dlq
        self.consumed = self.joined = self.learned = self.duplicates = self.unlabelled = 0
        self.learned_labelled = 0   # of ``learned``: labelled examples (the rest: unlabelled evidence)
        self._consumed_metric: dict[str, object] = {}
        self._example_keys: dict[str, tuple[bytes, int]] = {}
        self._join_totals = {"evicted": 0, "expired_no_feedback": 0, "expired_no_inference": 0}
        self._evicted_unwarned = 0
        self._evicted_warned_at = float("-inf")
        self._evicted_window_start = time.monotonic()   # counted since then: the rate's denominator
        self._out: dict[str, list] = {}   # context key -> [examples, estimated bytes]
        self.example_records = 0
        self.learned_locally = 0
        self.reroute = Rerouter(daemon, dlq)   # misplaced input re-routed, keyless dead-lettered

    def process(self, batch, now: float) -> None:
        try:
            self._process(batch, now)
        finally:
            self._send_examples(now)

    def _process(self, batch, now: float) -> None:
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
            def decode(data, max_bytes, _cps=cfg.limits.max_checkpoints):  # the checkpoint limit is the decoder's
                return decode_inference(data, max_bytes, _cps)
            add = joiner.add_inference
        else:
            decode, add = decode_feedback, joiner.add_feedback
        max_bytes = cfg.limits.max_record_bytes
        reject = self.dlq.reject
        out = self._out
        joined = 0
        n_parts, placed_elsewhere = self.reroute.count(tp.topic), self.reroute.check
        for rec in recs:
            if placed_elsewhere(rec, n_parts):   # keyless (DLQ) or another shard's (re-routed)
                continue
            try:
                ev = decode(rec.value, max_bytes)
            except DecodeError as exc:
                reject(rec, exc.reason, exc.detail)
                continue
            try:
                examples = add(ev, now, len(rec.value))  # its wire size counts toward join.max_bytes
            except Exception as exc:  # a core bug must not stop the loop or lose the record
                log.exception("join_failed", topic=rec.topic, partition=rec.partition, offset=rec.offset)
                reject(rec, "processing_error", repr(exc))
                continue
            for ex in examples:
                # the example is about as big as its two input records; this one's twice
                pending = out.get(ex.context_key)
                if pending is None:
                    pending = out[ex.context_key] = [[], 0]
                pending[0].append(ex)
                pending[1] += 2 * len(rec.value)
                if len(pending[0]) >= EXAMPLES_PER_RECORD or pending[1] >= EXAMPLE_RECORD_BYTES:
                    self._send_examples(now, ex.context_key)
            joined += len(examples)
            if examples and not is_labelled(examples[0]):
                joined -= 1   # the unlabelled evidence of an inference event that came first
                self.unlabelled += 1
        shard.advance(tp.topic, tp.partition, recs[-1].offset)
        if joined:
            self.joined += joined
            self.d.metrics.examples_joined.inc(joined)

    def _send_examples(self, now: float, only: str | None = None) -> None:
        """Produce the pending examples: one record per context key (keyed by
        it, on the partition that owns it)."""
        out = self._out
        if not out:
            return
        keys = self._example_keys
        send, topic = self.d.producer.send, self.d.cfg.topics.examples
        for ctx in ([only] if only is not None else list(out)):
            pending = out.pop(ctx)
            key_part = keys.get(ctx)
            if key_part is None:  # few distinct context keys: skip the pure-Python murmur2 per record
                if len(keys) >= 10_000:
                    keys.clear()
                key_part = keys[ctx] = (ctx.encode(), owner_partition(ctx, self.d._n_examples))
            headers = None
            shard = self.d.shards.get(shard_name("learn", key_part[1]))
            if shard is not None and self._learn_all(shard, pending[0], now):
                headers = [(LEARNED_HEADER, shard.tag.encode())]
            send(topic, key=key_part[0], value=encode_examples(pending[0]), partition=key_part[1], headers=headers)
            self.example_records += 1

    def _learn_all(self, shard, examples, now: float) -> bool:
        """Learn ``examples`` into a learn shard; False if any failed (the
        record is then sent untagged, so reading it back learns it again:
        the ones that succeeded are dropped as duplicates)."""
        learned, dup, failed, labelled = _learn_each(shard.obj.learn, examples, now, {"shard": shard.name})
        shard.dirty = True
        self.learned_locally += learned
        self.learned_labelled += labelled
        self._count_learned(learned, dup)
        return failed is None

    def _count_learned(self, learned: int, dup: int) -> None:
        m = self.d.metrics
        if learned:
            self.learned += learned
            m.examples_learned.inc(learned)
        if dup:
            self.duplicates += dup
            m.examples_duplicate.inc(dup)

    def _learn(self, tp, recs, now: float) -> None:
        shard = self._shard("learn", tp.partition)
        learn = shard.obj.learn
        reject = self.dlq.reject
        mine = (LEARNED_HEADER, shard.tag.encode())
        learned = dup = 0
        for rec in recs:
            if rec.headers and mine in rec.headers:
                continue  # learned by this very shard as it was produced
            try:
                examples, bad = decode_examples(rec.value)
            except DecodeError as exc:
                reject(rec, exc.reason, exc.detail)
                continue
            if bad:  # the record goes to the DLQ whole (valid ones are learned: replays dedupe)
                i, exc = bad[0]
                reject(rec, exc.reason, f"{len(bad)} of {len(examples) + len(bad)} examples invalid; "
                                        f"first, #{i}: {exc.detail}")
            n, d, failed, lab = _learn_each(learn, examples, now,
                                            {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset})
            self.learned_labelled += lab
            learned += n
            dup += d
            if failed is not None:
                reject(rec, "processing_error", repr(failed))
        shard.advance(tp.topic, tp.partition, recs[-1].offset)
        self._count_learned(learned, dup)

    def refresh_gauges(self) -> None:
        """Gauges and counters derived from shard state (after a tick or a rebalance)."""
        m = self.d.metrics
        pending = unique = pending_bytes = 0
        totals = dict.fromkeys(self._join_totals, 0)
        for shard in list(self.d.shards.values()):
            if shard.kind == "join":
                pending += len(shard.obj)
                pending_bytes += int(shard.obj.pending_bytes)
                st = shard.obj.stats
                for k in totals:
                    totals[k] += int(getattr(st, k, 0))
            else:
                unique += int(shard.obj.unique_examples)
        m.join_pending.set(pending)
        m.join_pending_bytes.set(pending_bytes)
        m.unique_examples.set(unique)
        for k, v in totals.items():
            delta = v - self._join_totals[k]
            if delta > 0:
                if k == "evicted":
                    m.join_evicted.inc(delta)
                    self._warn_evicted(delta, pending, pending_bytes)
                else:
                    m.join_expired.labels(kind=k.removeprefix("expired_")).inc(delta)
        self._join_totals = totals

    def _warn_evicted(self, n: int, pending: int, pending_bytes: int) -> None:
        """A warning, at most one per EVICTION_WARN_EVERY_S, when live pending
        halves are evicted (a flood of unmatched ids, or caps too small):
        their other half, when it comes, will find nothing to join."""
        now = time.monotonic()
        self._evicted_unwarned += n
        if self._evicted_unwarned and now - self._evicted_warned_at >= EVICTION_WARN_EVERY_S:
            elapsed = max(1.0, now - self._evicted_window_start)
            cfg = self.d.cfg
            log.warning("join_evicting", evicted=self._evicted_unwarned,
                        rate_per_s=round(self._evicted_unwarned / elapsed, 1), over_s=round(elapsed, 1),
                        pending=pending, pending_bytes=pending_bytes, max_entries=cfg.join.max_entries,
                        max_bytes=cfg.join_max_bytes(),
                        why="join buffer full: pending halves evicted oldest first before their other half came",
                        action="see README 'what to do when': stopwise_join_evicted_total is rising")
            self._evicted_unwarned = 0
            self._evicted_warned_at = now
            self._evicted_window_start = now


def _learn_each(learn, examples, now: float, where: dict) -> tuple[int, int, Exception | None, int]:
    """``learn`` every example; (learned, duplicates, first error, labelled
    learned). A core bug must not stop the loop or lose the example: it is
    logged with ``where`` and returned for the caller to act on."""
    learned = dup = labelled = 0
    failed = None
    for ex in examples:
        try:
            if learn(ex, now):
                learned += 1
                if is_labelled(ex):
                    labelled += 1
            else:
                dup += 1
        except Exception as exc:
            log.exception("learn_failed", request_id=ex.request_id, **where)
            failed = failed or exc
    return learned, dup, failed, labelled
