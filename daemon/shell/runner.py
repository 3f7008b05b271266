"""The daemon's run loop: the imperative shell around the pure core.

One consumer group over the inference, feedback and examples topics (range
assignment, so inference p and feedback p land on the same member). State is
sharded per partition (see :mod:`.shards`) and restored from the compacted
state topic on assignment (see :mod:`.assignment`); the snapshot's positions
are authoritative over committed offsets.

Checkpoint order (periodic, on revoke and at shutdown), always in this order:

1. Snapshot each owned shard's state together with the input positions it
   reflects (``dump_state`` + positions, signed) to the state topic, keyed by
   shard. Everything the shard produced from inputs before those positions
   (examples, thresholds, decisions, DLQ records) was sent before this.
2. Flush the producer (examples, thresholds, decisions, DLQ, state), so the
   snapshot and all the output it covers are durable.
3. Commit the consumer offsets (the same positions; for lag monitoring and
   for tools; restore does not depend on them).

A crash between any two steps replays input from the last durable snapshot:
joined examples re-produced by the replay are deduplicated by the Controller
(``learn`` returns False for a known request_id), so a restart neither loses
nor double-counts a labelled example.

Signal handlers only set flags; the loop acts on them between batches.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

import structlog
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from ..config import Config, load_config, require_signing
from ..core.engine import dump_state
from ..core.sharded import owned
from ..errors import ConfigError
from .assignment import Assignment
from .control import KILL_SWITCH_KEY, parse_control
from .dlq import DeadLetters
from .kafka_io import CheckedProducer, is_retriable, make_group_consumer, make_producer, make_reader
from .limits import check_topic_limits, fit_snapshot
from .processing import Processor
from .publisher import Publisher
from .recovery import Recovery
from .shards import Shard
from .snapshots import parse_pos_key

log = structlog.get_logger("stopwise.shell.runner")

GC_THRESHOLDS = (50_000, 20, 100)
FLUSH_TIMEOUT_S = 10.0
"""A checkpoint's flush waits at most this long (else it is retried, see .recovery)."""
COMMIT_TIMEOUT_MS = 5000
"""With two flushes and the commit, one checkpoint blocks well under WatchdogSec (30 s)."""
SHUTDOWN_FLUSH_TIMEOUT_S = 30.0


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> tuple[int, int, int]:
    """Process-wide garbage-collector settings for the daemon (called by
    ``stopwise run`` once everything is imported; returns the old ones).

    Every decoded record, example and join entry is a handful of container
    objects, so CPython's default first-generation threshold (700) runs a
    collection every few records, and full collections walk every long-lived
    object (River's weights, pending joins). ``gc.freeze()`` moves what exists
    at start-up out of the collector's view; a larger threshold makes young
    collections rare. Reference counting still frees almost everything at
    once; only cycles wait longer.

    >>> old = tune_gc((10_000, 10, 10)); gc.get_threshold()
    (10000, 10, 10)
    >>> _ = tune_gc(old); gc.unfreeze()
    """
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return old


class Daemon(Recovery, Assignment):
    """``Daemon(config).run(stop_event)``; the ``stopwise run`` command builds
    one from the config file and installs the signal handlers."""

    def __init__(self, config: Config, *, config_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 metrics=None, notifier=None, producer_factory=None, consumer_factory=None,
                 reader_factory=None, lag_monitor: bool = True) -> None:
        if metrics is None:
            from ..metrics import Metrics
            metrics = Metrics()
        if notifier is None:
            from ..sdnotify import Notifier
            notifier = Notifier(None)
        self.cfg = config
        self.config_path, self.env = config_path, env
        self.clock, self.metrics, self.notifier = clock, metrics, notifier
        self._producer_factory = producer_factory or make_producer
        self._consumer_factory = consumer_factory or make_group_consumer
        self._reader_factory = reader_factory or make_reader
        self._want_lag = lag_monitor
        # topic limits are checked at start when the daemon builds its own Kafka clients
        self._check_limits = producer_factory is None and consumer_factory is None
        self.shards: dict[str, Shard] = {}
        self.roles = {config.topics.inference: "inference", config.topics.feedback: "feedback",
                      config.topics.examples: "examples"}
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._closing = False
        self.kill_switch = config.guardrails.kill_switch
        self._control_seen: bytes | None = None
        self.assigned_once = threading.Event()
        self._pending_assign: set[TopicPartition] = set()
        self._revoked_at: float | None = None
        self.ticks = 0
        self.snapshots_written = 0
        self.snapshots_refused = 0
        self.control_refused = 0  # control records that did not verify (or were malformed)
        self._output_lost = False

    # ---- flags (signal handlers call these) -------------------------------------------
    def request_stop(self, *_args) -> None:
        self._stop.set()

    def request_reload(self, *_args) -> None:
        self._reload.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # ---- lifecycle --------------------------------------------------------------------
    def run(self, stop_event: threading.Event | None = None) -> int:
        """Run until stopped (``request_stop``, a signal, or ``stop_event``); exit code."""
        cfg = self.cfg
        key = require_signing(cfg, str(self.config_path or "<config>"))
        self.producer = CheckedProducer(self._producer_factory(cfg))
        self.publisher = Publisher(self.producer, cfg.topics.thresholds, cfg.topics.decisions, key, self.metrics)
        self.dlq = DeadLetters(self.producer, cfg.topics.dlq, self.metrics, cfg.limits.dlq_max_value_bytes)
        self.processor = Processor(self, self.dlq)
        self._stop_event = stop_event
        try:
            if self._check_limits:
                check_topic_limits(cfg)  # TopicsError: a limit the topics cannot hold (see .limits)
            while not self._start_io():  # retried while Kafka is away (see .recovery)
                if self._stopping():
                    return 0
        except Exception as exc:
            return self._fatal("startup", exc)
        lag = self._start_lag()
        if key is None:
            log.warning("daemon_started", group=cfg.kafka.group_id, kill_switch=self.kill_switch, signing="UNSIGNED",
                        why="security.allow_unsigned is true: records and snapshots are unsigned, "
                            "anyone who can write to the topics can move thresholds")
        else:
            log.info("daemon_started", group=cfg.kafka.group_id, kill_switch=self.kill_switch, signing="hmac-sha256")
        now = self.clock()
        next_tick, next_snap = now + cfg.publish.interval_s, now + cfg.snapshot.interval_s
        ready_sent, last_dog = False, 0.0
        where, failure = "poll", None
        try:
            while not self._stopping():
                try:
                    if self.consumer is None:  # a rebuild that Kafka's absence interrupted
                        where = "assignment"
                        self._rebuild_consumer()
                    where = "poll"
                    batch = self.consumer.poll(timeout_ms=self.cfg.kafka.poll_timeout_ms,
                                               max_records=self.cfg.kafka.max_poll_records)
                    where = "assignment"
                    if self._pending_assign:
                        self._finish_assignment()
                    self._check_rebalance_stall()
                    where = "process"
                    if batch:
                        t0 = time.perf_counter()
                        self.processor.process(batch, self.clock())
                        self.metrics.processing_seconds.observe(time.perf_counter() - t0)
                    if not ready_sent and self.assigned_once.is_set():
                        self.notifier.ready(self._status())
                        ready_sent = True
                        log.info("daemon_ready", shards=sorted(self.shards))
                    where = "reload"
                    if self._reload.is_set():
                        self._reload.clear()
                        self._do_reload()
                        next_tick = min(next_tick, self.clock() + self.cfg.publish.interval_s)
                    now = self.clock()
                    where = "tick"
                    if now >= next_tick:
                        self.tick(now)
                        next_tick = now + self.cfg.publish.interval_s
                    where = "checkpoint"
                    if now >= next_snap:
                        self.checkpoint()
                        next_snap = self.clock() + self.cfg.snapshot.interval_s
                except Exception as exc:
                    self._loop_failed(where, exc)  # backs off, or raises when retrying cannot help
                else:
                    self._loop_ok()
                mono = time.monotonic()
                if mono - last_dog >= 1.0:
                    self.notifier.watchdog()
                    last_dog = mono
        except Exception as exc:
            failure = exc
        finally:
            clean = self._shutdown(lag)
        if failure is not None:
            return self._fatal(getattr(failure, "where", where), failure)
        return 0 if clean else 1

    def _start_lag(self):
        if not self._want_lag:
            return None
        try:
            from .lag import LagMonitor
            lag = LagMonitor(self.cfg, self.metrics)
            lag.start()
            return lag
        except Exception:  # lag is observability only; never stop the daemon for it
            log.exception("lag_monitor_not_started")
            return None

    def _shutdown(self, lag) -> bool:
        """Final checkpoint, then close every client; False if the final
        checkpoint failed for a reason other than Kafka being away (then the
        state since the last snapshot is replayed on the next start)."""
        self.notifier.stopping()
        log.info("daemon_stopping", shards=sorted(self.shards))
        clean = True
        try:
            self.checkpoint(force=True, flush_timeout_s=SHUTDOWN_FLUSH_TIMEOUT_S)
            log.info("final_checkpoint", shards=len(self.shards), snapshots=self.snapshots_written)
        except Exception as exc:
            clean = is_retriable(exc)
            log.error("final_checkpoint_failed", error=f"{type(exc).__name__}: {exc}",
                      action="the next start replays input from the last durable snapshot")
        finally:
            self._closing = True
            if lag is not None:
                lag.stop()
            for closer in (lambda: self.consumer and self.consumer.close(autocommit=False), self.state_view.close,
                           self.thresholds_view.close, lambda: self.producer.close(timeout=10)):
                try:
                    closer()
                except Exception:
                    log.exception("close_failed")
            log.info("daemon_stopped", snapshots=self.snapshots_written)
        return clean

    # ---- periodic work ----------------------------------------------------------------
    def _catch_up_thresholds(self) -> None:
        """Read the thresholds topic to its end; versions only grow past what it holds."""
        self.thresholds_view.catch_up(on_record=lambda r: r.value and self.publisher.observe_topic_value(r.value))

    def tick(self, now: float) -> int:
        """Apply control records, expire joins, publish changed thresholds."""
        self.ticks += 1
        try:
            self.state_view.catch_up()
            self._catch_up_thresholds()
        except Exception as exc:  # control records wait for the next tick; Kafka may be away
            if is_retriable(exc):
                log.warning("control_read_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                log.exception("control_read_failed")
        self._apply_control()
        published = 0
        for shard in list(self.shards.values()):
            if shard.kind == "join":
                expired = shard.obj.expire(now)
                if expired:
                    shard.dirty = True
                continue
            decisions = shard.obj.tick(now)
            if decisions:
                shard.dirty = True
            # every learn shard knows '*' and the ancestors of its contexts; only the
            # owner (the examples partition the context key hashes to) publishes one
            for d in owned(decisions, shard.partition, self._n_examples):
                self.publisher.publish(d)
                published += 1
        self.processor.refresh_gauges()
        self.notifier.status(self._status())
        return published

    def checkpoint(self, names: list[str] | None = None, *, commit: bool = True, force: bool = False,
                   flush_timeout_s: float = FLUSH_TIMEOUT_S) -> dict:
        """Steps 1-3 of the module docstring, for ``names`` (default: all
        shards); unchanged shards are not re-snapshotted unless ``force``.
        Returns the offsets of step 3 (committed here unless ``commit`` is
        False: the revoke listener awaits the commit on the IO loop)."""
        t0 = time.perf_counter()
        # 0. output lost since the last checkpoint (delivery failed after retries): do not
        #    snapshot positions past it; crash and replay from the last good snapshot instead
        self.producer.flush(timeout=flush_timeout_s)  # KafkaTimeoutError: retried by the loop
        failed, err = self.producer.take_failures()
        if failed or self._output_lost:
            self._output_lost = True  # sticky: the shutdown checkpoint must refuse too
            raise RuntimeError(f"{failed} record(s) could not be delivered since the last checkpoint "
                               f"(last error: {err!r}); refusing to snapshot past lost output")
        shards = [self.shards[n] for n in (names if names is not None else sorted(self.shards)) if n in self.shards]
        key = self.cfg.security.hmac_key()
        now = self.clock()
        # 1. snapshot each shard with the positions it reflects (shrunk or refused, never
        #    sent over the state topic's limit: see .limits)
        unsaved: set[str] = set()
        for shard in shards:
            if not shard.dirty and not force:
                continue
            blob = fit_snapshot(shard, dump_state, now, key, self.cfg.topics.state_max_message_bytes)
            if blob is None:
                self.snapshots_refused += 1
                unsaved.add(shard.name)
                continue
            self.producer.send(self.cfg.topics.state, key=shard.name.encode(), value=blob)
            shard.dirty = False
            self.snapshots_written += 1
            self.metrics.snapshots.inc()
        # 2. flush everything produced so far (outputs and snapshots); a timeout here leaves
        #    the snapshots in flight: they land, or the next checkpoint counts them as lost
        self.producer.flush(timeout=flush_timeout_s)
        failed, err = self.producer.take_failures()
        if failed:  # a snapshot (or late output) was not written: keep the old commit, fail loudly
            self._output_lost = True
            raise RuntimeError(f"{failed} record(s) (snapshots included) could not be delivered: {err!r}")
        # 3. commit the same positions
        offsets = {}
        assigned = self.consumer.assignment() if getattr(self, "consumer", None) is not None else set()
        for shard in shards:
            if shard.name in unsaved:  # its positions are not durable: do not commit them
                continue
            for pk, off in shard.positions.items():
                tp = TopicPartition(*parse_pos_key(pk))
                if tp in assigned:
                    offsets[tp] = OffsetAndMetadata(off, "", -1)
        if offsets and commit:
            self.notifier.watchdog()  # each step above is bounded; Kafka may just be slow
            try:
                self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            except Exception as exc:  # advisory (restore reads the snapshots' positions) unless fatal
                if not is_retriable(exc):
                    raise
                # e.g. CommitFailedError after UnknownMemberId: the next poll() re-joins; the
                # shards of revoked (or lost) partitions are dropped and restored from the
                # snapshots just written (see .assignment)
                log.warning("commit_failed", error=f"{type(exc).__name__}: {exc}",
                            action="positions are in the snapshots; the next checkpoint commits again")
        self.metrics.snapshot_seconds.observe(time.perf_counter() - t0)
        return offsets

    def _status(self) -> str:
        p = self.processor
        return (f"shards={len(self.shards)} consumed={p.consumed} rejected={self.dlq.count} "
                f"joined={p.joined} learned={p.learned} published={self.publisher.published}")

    # ---- control and reload -----------------------------------------------------------
    def _apply_control(self, initial: bool = False) -> None:
        value = self.state_view.latest.get(KILL_SWITCH_KEY)
        if value is not None and value != self._control_seen:
            self._control_seen = value
            rec = parse_control(value, self.cfg.security.hmac_key())
            if rec is None:
                self.control_refused += 1
                log.error("control_record_refused", key=KILL_SWITCH_KEY.decode(), why="malformed or bad signature")
            else:
                on = rec["on"] or self.cfg.guardrails.kill_switch
                if on != self.kill_switch or initial:
                    log.warning("kill_switch", on=on, source="control_record")
                self.kill_switch = on
                for shard in self.shards.values():
                    if shard.kind == "learn":
                        shard.obj.set_kill_switch(on)
                        shard.dirty = True

    def _do_reload(self) -> None:
        if self.config_path is None:
            log.warning("reload_ignored", why="no config file")
            return
        # Type=notify-reload: RELOADING first, and READY on every path, or
        # `systemctl reload` waits for its timeout.
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, env=self.env)
            key = require_signing(new, str(self.config_path))
            if key is None and self.publisher.key is not None:
                raise ConfigError(str(self.config_path), "security.hmac_key_file", ConfigError.MISSING,  # type: ignore[attr-defined]
                                  "a reload cannot turn signing off (restart the daemon to run unsigned)")
        except (ConfigError, OSError) as exc:
            log.error("reload_refused", error=str(exc), kept="previous config")
            self.metrics.reloads.labels(result="rejected").inc()
            self.notifier.ready(f"reload refused ({exc}); {self._status()}")
            return
        if new.kafka != self.cfg.kafka or new.topics != self.cfg.topics:
            log.warning("reload_partial", why="kafka/topics changes need a restart")
            new = new.model_copy(update={"kafka": self.cfg.kafka, "topics": self.cfg.topics})
        self.cfg = new
        self.publisher.key = key
        if new.guardrails.kill_switch and not self.kill_switch:
            self.kill_switch = True
        for shard in self.shards.values():
            if shard.kind == "learn":
                shard.obj.reconfigure(new)
                if self.kill_switch:
                    shard.obj.set_kill_switch(True)
            else:
                shard.obj.reconfigure(new)
            shard.dirty = True
        log.info("reloaded", file=str(self.config_path), publish_interval_s=new.publish.interval_s,
                 budget=new.budget.em_drop)
        self.metrics.reloads.labels(result="applied").inc()
        self.notifier.ready(self._status())
