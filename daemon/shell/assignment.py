"""Partition assignment for the daemon: the rebalance listener, shard
restore from the state topic, and the safety net for a stalled re-join.

Mixed into :class:`~stopwise.daemon.shell.runner.Daemon` (it uses the
daemon's consumer, state view, shards and checkpoint). The listener runs on
kafka-python's IO loop while the main thread waits inside ``poll()``; it
only snapshots on revoke and pauses new partitions on assignment. The main
thread restores the new shards right after ``poll()`` returns, seeks to the
snapshot positions and resumes.
"""

from __future__ import annotations

import time

import structlog
from kafka import TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from ..core.engine import Controller, load_state
from ..core.join import Joiner
from .sanity import check_state
from .shards import Shard, shard_inputs, shard_names_for
from .snapshots import Snapshot, pos_key

log = structlog.get_logger("stopwise.shell.assignment")


class _Listener(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's IO loop while the main thread waits in poll().

    Async so the revoke-time commit (checkpoint step 3) can be awaited on the
    loop: kafka-python refuses a blocking ``commit()`` from its IO thread."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon

    async def on_partitions_revoked(self, revoked):
        offsets = self.daemon._on_revoked(revoked)
        if offsets:
            try:  # the same coroutine kafka-python awaits for its own pre-rebalance commit
                await self.daemon.consumer._coordinator._commit_offsets_sync_async(offsets)
            except Exception as exc:  # positions live in the snapshots; the commit is advisory
                log.warning("revoke_commit_failed", error=repr(exc))

    async def on_partitions_assigned(self, assigned):
        self.daemon._on_assigned(assigned)

    async def on_partitions_lost(self, lost):
        self.daemon._on_lost(lost)


class Assignment:
    """Rebalance handling (see the module docstring)."""

    def _subscribe(self) -> None:
        cfg = self.cfg
        self.consumer = self._consumer_factory(cfg)
        self.consumer.subscribe(topics=[cfg.topics.inference, cfg.topics.feedback, cfg.topics.examples],
                                listener=_Listener(self))
        # Load the subscribed topics' metadata before the first join: kafka-python
        # 3.0.x re-joins when the leader assigned from an empty metadata snapshot, and
        # that second join can be dropped half-way (the member then never gets partitions).
        self.consumer.topics()
        self._revoked_at = None

    def _check_rebalance_stall(self) -> None:
        """Safety net for a re-join that never completes: rebuild the consumer
        (nothing is lost: revoked shards were snapshotted and dropped)."""
        limit = max(30.0, 3 * self.cfg.kafka.session_timeout_ms / 1000)
        if self._revoked_at is None or time.monotonic() - self._revoked_at < limit:
            return
        log.error("rebalance_stalled", seconds=round(time.monotonic() - self._revoked_at, 1),
                  action="recreating the group consumer")
        self._rebuild_consumer()

    def _rebuild_consumer(self) -> None:
        """Close the group consumer, drop every shard, subscribe afresh. While
        Kafka is away the new consumer may not be built: ``consumer`` is then
        None and the run loop calls this again after its backoff."""
        old, self.consumer = self.consumer, None
        if old is not None:
            self._closing = True
            try:
                old.close(autocommit=False)
            except Exception:
                log.exception("close_failed")
            finally:
                self._closing = False
        self.shards.clear()
        self._pending_assign = set()
        self._subscribe()

    def _on_revoked(self, revoked) -> dict:
        """Snapshot + flush the shards losing a partition, drop them; return
        the offsets for the caller to commit (step 3)."""
        self._pending_assign -= set(revoked)
        if self._closing:
            return {}
        self._revoked_at = time.monotonic()
        names = shard_names_for(revoked, self.roles)
        try:
            offsets = self.checkpoint(names, commit=False) if names else {}
        finally:
            # dropped even when the checkpoint failed (Kafka away): another member may own
            # them now; re-assigned, they are restored from their last durable snapshot
            for n in names:
                self.shards.pop(n, None)
        log.info("partitions_revoked", shards=names)
        return offsets

    def _on_lost(self, lost) -> None:
        self._pending_assign -= set(lost)
        names = shard_names_for(lost, self.roles)
        for n in names:
            self.shards.pop(n, None)
        log.warning("partitions_lost", shards=names, why="membership lost; state dropped unsnapshotted")

    def _on_assigned(self, assigned) -> None:
        # Keep the IO thread quick (heartbeats): pause the new partitions here,
        # restore their shards on the main thread right after poll() returns.
        assigned = set(assigned)
        self._revoked_at = None
        self._pending_assign |= assigned
        if assigned:
            self.consumer.pause(*assigned)
        else:
            # A standby member (more instances than partitions) owns nothing
            # and has nothing to restore: it is ready as it is, so READY goes
            # out and systemd does not time its start out.
            self.assigned_once.set()
        log.info("partitions_assigned", partitions=len(assigned))

    def _finish_assignment(self) -> None:
        """Restore the shards of newly assigned partitions from their latest
        snapshots, seek to the snapshot positions, resume fetching."""
        owned = set(self.consumer.assignment())
        tps = self._pending_assign & owned
        self._pending_assign &= owned  # pending until restored: a failed catch-up is retried
        names = [n for n in shard_names_for(tps, self.roles)
                 if n not in self.shards]
        if names:
            self.state_view.catch_up()
        for name in names:
            shard = self._restore(name)
            self.shards[name] = shard
            for topic, p in shard_inputs(name, self.roles):
                tp = TopicPartition(topic, p)
                if tp not in owned:
                    continue
                pos = shard.positions.get(pos_key(topic, p))
                if pos is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, pos)
        if tps:
            self.consumer.resume(*tps)
        self._pending_assign -= tps
        self.processor.reroute.partitions.clear()   # input partition counts: re-read (partitions may be added)
        self.processor.refresh_gauges()
        log.info("shards_ready", shards=sorted(self.shards), restored=names)
        self.assigned_once.set()

    def _restore(self, name: str) -> Shard:
        kind, _, p = name.partition("/")
        blob = self.state_view.latest.get(name.encode())
        if blob is not None:
            try:
                snap = Snapshot.decode(blob, self.cfg.security.hmac_key())
                if snap.shard != name:
                    raise ValueError(f"snapshot stored under {name!r} is of shard {snap.shard!r}")
                obj = load_state(snap.state)  # plain data: a forged state is refused, never run
                want = Joiner if kind == "join" else Controller
                if type(obj) is not want:
                    raise ValueError(f"snapshot state is a {type(obj).__name__}, not a {want.__name__}")
                check_state(kind, obj)  # no poisoned number (NaN, inf, 1e300 weights): refused, rebuilt
                shard = Shard(name, kind, int(p), obj, dict(snap.positions), dirty=False)
                if kind == "learn":
                    obj.reconfigure(self.cfg)
                    if self.kill_switch:
                        obj.set_kill_switch(True)
                log.info("shard_restored", shard=name, positions=snap.positions, meta=snap.meta)
                return shard
            except Exception as exc:  # bad signature, malformed header, unloadable state: refused loudly
                self.snapshots_refused += 1
                log.error("snapshot_refused", shard=name, error=str(exc),
                          action="rebuilding the shard from the start of the retained input")
        if kind == "join":
            obj = Joiner.from_config(self.cfg)
        else:
            obj = Controller(self.cfg)
            if self.kill_switch:
                obj.set_kill_switch(True)
        return Shard(name, kind, int(p), obj, {})
