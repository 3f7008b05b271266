"""Input records on the wrong partition are re-routed, never joined wrong
(issue 10): the shell side of :mod:`stopwise.daemon.partitioner`.

Per input record the join path asks :meth:`Rerouter.check`: a record whose
key the murmur2 rule puts on another partition is produced again, raw (same
key, value and headers plus ``stopwise.rerouted: topic/partition/offset``),
to the right partition of the SAME topic, where the join shard owning it
consumes it like any other record; it is skipped here. The copy is sent
before the batch's checkpoint (the run loop flushes the producer before it
commits), so a crash in between re-delivers the original and re-routes it
again: at-least-once, and a second copy of an inference or feedback event is
a duplicate the Joiner ignores. A copy (it carries the header) is never
re-routed again, so two instances that disagree on a partition count (while
partitions are being added) cannot bounce a record between them.

Keyless input (key None) cannot be placed: it goes to the DLQ with reason
``no_key``. Re-routes are counted in ``stopwise_input_rerouted_total{topic}``
and logged at warning at most once per :data:`WARN_EVERY_S`, with the counts
since the last warning and the producer's likely partitioner.
"""

from __future__ import annotations

import time

import structlog

from ..partitioner import likely_partitioner, misplaced

log = structlog.get_logger("stopwise.shell.reroute")

REROUTED_HEADER = "stopwise.rerouted"
WARN_EVERY_S = 60.0
"""At most one ``input_rerouted`` warning per this many seconds."""
NO_KEY_DETAIL = ("input records must be keyed by request_id (UTF-8), on both input topics, "
                 "so both halves of a request reach the same join shard")


class Rerouter:
    """Checks input records' partitions; re-routes misplaced ones, dead-letters keyless ones."""

    def __init__(self, daemon, dlq) -> None:
        self.d = daemon
        self.dlq = dlq
        self.partitions: dict[str, int] = {}   # topic -> partition count (cleared at each assignment)
        self.rerouted = self.keyless = 0
        self._metric: dict[str, object] = {}
        self._unwarned: dict[tuple[str, str], int] = {}   # (topic, likely partitioner) -> count
        self._warned_at = float("-inf")
        self._window_start = time.monotonic()

    def count(self, topic: str) -> int:
        """The partition count of input ``topic`` (the consumer's metadata,
        cached; the configured ``topics.input_partitions`` without one)."""
        n = self.partitions.get(topic)
        if n is None:
            consumer = getattr(self.d, "consumer", None)
            parts = consumer.partitions_for_topic(topic) if consumer is not None else None
            n = self.partitions[topic] = len(parts) if parts else self.d.cfg.topics.input_partitions
        return n

    def check(self, rec, n_partitions: int) -> bool:
        """True when ``rec`` is not for this partition's join shard: it was
        re-routed (misplaced) or dead-lettered (keyless). The caller skips it."""
        key = rec.key
        if key is None:
            self.keyless += 1
            self.dlq.reject(rec, "no_key", NO_KEY_DETAIL)
            return True
        want = misplaced(key, rec.partition, n_partitions)
        if want is None:
            return False
        headers = list(rec.headers or ())
        if any(name == REROUTED_HEADER for name, _ in headers):
            return False   # a copy: joined here rather than bounced again (see module doc)
        headers.append((REROUTED_HEADER, f"{rec.topic}/{rec.partition}/{rec.offset}".encode()))
        self.d.producer.send(rec.topic, key=key, value=rec.value, headers=headers, partition=want)
        self.rerouted += 1
        child = self._metric.get(rec.topic)
        if child is None:
            child = self._metric[rec.topic] = self.d.metrics.input_rerouted.labels(topic=rec.topic)
        child.inc()
        guess = likely_partitioner(key, rec.partition, n_partitions)
        k = (rec.topic, guess)
        self._unwarned[k] = self._unwarned.get(k, 0) + 1
        self._maybe_warn(rec, want, guess)
        return True

    def _maybe_warn(self, rec, want: int, guess: str) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_S:
            return
        counts = self._unwarned
        log.warning("input_rerouted", rerouted=sum(counts.values()),
                    over_s=round(max(0.0, now - self._window_start), 1),
                    by_topic_and_partitioner=[{"topic": t, "likely_partitioner": g, "count": c}
                                              for (t, g), c in sorted(counts.items())],
                    example={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
                             "belongs_on": want},
                    likely_partitioner=guess,
                    why="a producer put records on another partition than Kafka's default (murmur2) "
                        "partitioner would: their other half is joined on the murmur2 partition",
                    action="re-routed to the right partition (nothing lost); fix the producer: "
                           "README 'Producing from other clients'")
        self._unwarned = {}
        self._warned_at = self._window_start = now
