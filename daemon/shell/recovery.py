"""How the run loop survives Kafka outages.

Mixed into :class:`~stopwise.daemon.shell.runner.Daemon`. Every step of the
loop (poll, assignment, process, tick, checkpoint) runs under one handler:
an error :func:`~.kafka_io.is_retriable` accepts (connection lost,
coordinator moving, a rebalance, a commit refused after one, a timeout) is
logged as one ``kafka_retry`` line and backed off from (capped exponential,
jittered; the systemd watchdog is pinged and the stop flag honoured while
waiting); the next ``poll()`` re-joins the group if the membership was lost.
Anything else raises :class:`~stopwise.daemon.errors.FatalKafkaError` (a
Kafka error) or itself, and ``run`` exits 1 after one ``daemon_fatal`` line.
Start-up (reading the thresholds and state topics, joining the group) is
retried the same way, so the daemon may start while the broker is away.

Nothing is lost or counted twice on the way, because no retry continues from
half-done work:

- ``poll`` failed: no records were handed out; positions are unchanged.
- ``process`` failed half-way through a batch: the consumer's positions are
  past records whose effects may be partial, so every shard is dropped
  unsnapshotted and its partitions are restored from their last snapshot and
  re-read from its positions (as after a lost membership); re-produced
  examples are deduplicated by request_id where they are learned.
- ``assignment`` failed (the state topic could not be read): the new
  partitions stay paused and pending; the restore is retried.
- ``checkpoint`` failed (flush timed out, commit refused): the snapshot
  either lands (and is used) or is counted as lost output (fatal, by the
  checkpoint's own rule); the commit is advisory. A rebalance after a
  refused commit revokes (or loses) the partitions as usual: their shards
  are dropped and restored from snapshots on re-assignment.
"""

from __future__ import annotations

import threading
import time

import structlog
from kafka import TopicPartition
from kafka.errors import KafkaError

from ..errors import FatalKafkaError, KafkaUnavailable, StopwiseError
from .kafka_io import Backoff, CompactedView, is_retriable
from .shards import shard_inputs

log = structlog.get_logger("stopwise.shell.recovery")

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 5.0
RECOVERED_AFTER_S = 10.0
"""Failure-free seconds after which the backoff starts again from its base."""


class Recovery:
    """Retry/exit decisions for the run loop (see the module docstring)."""

    _stop: threading.Event
    _stop_event: threading.Event | None = None
    _backoff: Backoff | None = None
    _failing_since: float | None = None
    _last_failure = 0.0
    kafka_retries = 0

    def _start_io(self) -> bool:
        """Read the thresholds and state topics to their ends and join the
        group; False (after a backoff) when Kafka is away, raises when
        retrying cannot help."""
        cfg = self.cfg
        try:
            if getattr(self, "state_view", None) is None:
                self.state_view = CompactedView(cfg.topics.state, self._reader_factory(cfg))
            if getattr(self, "thresholds_view", None) is None:
                self.thresholds_view = CompactedView(cfg.topics.thresholds, self._reader_factory(cfg))
            self._catch_up_thresholds()
            self.state_view.catch_up()
            self._apply_control(initial=True)
            if getattr(self, "consumer", None) is not None:  # a half-done earlier attempt
                self.consumer, old = None, self.consumer
                old.close(autocommit=False)
            self._subscribe()
            self._n_examples = (len(self.consumer.partitions_for_topic(cfg.topics.examples) or ())
                                or cfg.topics.examples_partitions)
            return True
        except Exception as exc:
            self._loop_failed("startup", exc)
            return False

    def _fatal(self, where: str, exc: BaseException) -> int:
        """The one line a fatal error gets; the exit code."""
        cause = exc.cause if isinstance(exc, FatalKafkaError) else exc
        log.error("daemon_fatal", where=where, error=f"{type(cause).__name__}: {cause}",
                  action="exiting with status 1", exc_info=not isinstance(cause, (KafkaError, StopwiseError)))
        return 1

    def _stopping(self) -> bool:
        return self._stop.is_set() or (self._stop_event is not None and self._stop_event.is_set())

    def _loop_failed(self, where: str, exc: BaseException) -> KafkaUnavailable:
        """Back off after a retriable ``exc`` raised in step ``where`` (and
        reset the shards if it broke a batch half-way); raise otherwise."""
        if not is_retriable(exc):
            if isinstance(exc, (KafkaError, StopwiseError)) and not isinstance(exc, FatalKafkaError):
                raise FatalKafkaError(where, exc) from exc
            raise exc
        if self._backoff is None:
            self._backoff = Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self._last_failure = now
        err = KafkaUnavailable(where, exc, self._backoff.attempt + 1, self._backoff.next())
        self.kafka_retries += 1
        log.warning("kafka_retry", where=where, error=f"{type(exc).__name__}: {exc}", attempt=err.attempt,
                    retry_in_s=round(err.retry_after, 2), failing_s=round(now - self._failing_since, 1))
        if where == "process":
            self._reset_shards(f"a batch failed half-way ({type(exc).__name__})")
        self.notifier.status(f"kafka unavailable ({where}, attempt {err.attempt}); retrying")
        self._backoff_sleep(err.retry_after)
        return err

    def _loop_ok(self) -> None:
        """A loop iteration without error: after ``RECOVERED_AFTER_S`` of
        them the backoff starts again from its base."""
        if self._failing_since is not None and time.monotonic() - self._last_failure >= RECOVERED_AFTER_S:
            log.info("kafka_recovered", failing_s=round(self._last_failure - self._failing_since, 1),
                     attempts=self._backoff.attempt if self._backoff else 0)
            self._failing_since = None
            if self._backoff is not None:
                self._backoff.reset()

    def _backoff_sleep(self, seconds: float) -> None:
        """Wait ``seconds``, pinging the watchdog every second and returning
        as soon as a stop is requested."""
        deadline = time.monotonic() + seconds
        last_dog = 0.0
        while not self._stopping():
            mono = time.monotonic()
            if mono >= deadline:
                return
            if mono - last_dog >= 1.0:
                self.notifier.watchdog()
                last_dog = mono
            self._stop.wait(min(0.05, deadline - mono))

    def _reset_shards(self, why: str) -> None:
        """Drop every shard unsnapshotted and mark its owned partitions for a
        restore from the latest snapshots (paused until then)."""
        try:
            owned = set(self.consumer.assignment())
        except Exception:  # the consumer is unusable: a rebuild restores everything anyway
            owned = set()
        tps = {TopicPartition(t, p) for name in self.shards for t, p in shard_inputs(name, self.roles)} & owned
        dropped = sorted(self.shards)
        self.shards.clear()
        self._pending_assign |= tps
        if tps:
            self.consumer.pause(*tps)
        log.warning("shards_reset", shards=dropped, why=why,
                    action="restoring them from their latest snapshots")
