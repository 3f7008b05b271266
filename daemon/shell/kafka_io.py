"""Kafka clients for the shell: producer/consumer factories built from the
Config, and :class:`CompactedView`, a group-less reader that keeps the latest
value per key of a compacted topic (state snapshots, control records,
threshold records).

>>> client_kwargs(Config())["bootstrap_servers"]
'127.0.0.1:9092'
>>> owner_partition("*", 3) == owner_partition("*", 3) < 3
True
"""

from __future__ import annotations

import time
from typing import Callable

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.partitioner.default import murmur2

from ..config import Config

log = structlog.get_logger("stopwise.shell.kafka_io")

MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""Producer request cap: snapshots can be large (the topic's max.message.bytes
still applies)."""


def client_kwargs(cfg: Config) -> dict:
    """Connection settings shared by every client."""
    k = cfg.kafka
    return {"bootstrap_servers": k.bootstrap, "client_id": k.client_id,
            "security_protocol": k.security_protocol, "request_timeout_ms": k.request_timeout_ms}


def make_producer(cfg: Config, **overrides) -> KafkaProducer:
    """One producer for examples, thresholds, decisions, DLQ and state."""
    kw = client_kwargs(cfg) | {"acks": "all", "linger_ms": 5, "batch_size": 256 * 1024,
                               "max_request_size": MAX_REQUEST_BYTES, "retries": 2**31 - 1}
    kw.update(overrides)
    return KafkaProducer(**kw)


class CheckedProducer:
    """A producer wrapper that counts failed deliveries (after the client's own
    retries), so a checkpoint never records input positions past output that
    was lost. ``failures`` is reset by :meth:`take_failures`."""

    def __init__(self, producer) -> None:
        self.producer = producer
        self.failures = 0
        self.last_error: BaseException | None = None

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = exc

    def send(self, topic: str, value=None, key=None, headers=None, partition=None):
        fut = self.producer.send(topic, value=value, key=key, headers=headers, partition=partition)
        fut.add_errback(self._failed)
        return fut

    def take_failures(self) -> tuple[int, BaseException | None]:
        n, err = self.failures, self.last_error
        self.failures, self.last_error = 0, None
        return n, err

    def flush(self, timeout=None) -> None:
        self.producer.flush(timeout=timeout)

    def close(self, timeout=None) -> None:
        self.producer.close(timeout=timeout)


def make_group_consumer(cfg: Config, **overrides) -> KafkaConsumer:
    """The daemon's group consumer: range assignment (co-partitioned inputs
    land on the same member), manual commits, earliest when nothing is known."""
    k = cfg.kafka
    kw = client_kwargs(cfg) | {
        "group_id": k.group_id, "enable_auto_commit": False, "auto_offset_reset": "earliest",
        "partition_assignment_strategy": (RangePartitionAssignor,),
        "session_timeout_ms": k.session_timeout_ms, "max_poll_records": k.max_poll_records,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
    }
    kw.update(overrides)
    return KafkaConsumer(**kw)


def make_reader(cfg: Config, **overrides) -> KafkaConsumer:
    """A group-less consumer (manual assignment, no commits)."""
    kw = client_kwargs(cfg) | {"group_id": None, "enable_auto_commit": False,
                               "auto_offset_reset": "earliest",
                               "max_partition_fetch_bytes": 32 * 1024 * 1024,
                               "fetch_max_bytes": 64 * 1024 * 1024}
    kw.update(overrides)
    return KafkaConsumer(**kw)


def owner_partition(context_key: str, n_partitions: int) -> int:
    """The examples partition a context key hashes to (Kafka's default
    partitioner: murmur2 of the key bytes), i.e. the learn shard owning it."""
    return (murmur2(context_key.encode()) & 0x7FFFFFFF) % max(1, n_partitions)


class CompactedView:
    """Latest value per key of one topic, read by a group-less consumer.

    ``catch_up()`` reads up to the end offsets observed at the call (so a
    record flushed before the call is always seen). Tombstones remove keys.
    """

    def __init__(self, topic: str, consumer: KafkaConsumer, *, timeout_s: float = 30.0) -> None:
        self.topic = topic
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.latest: dict[bytes, bytes] = {}
        self._tps: list[TopicPartition] = []

    def _assign(self) -> None:
        parts = self.consumer.partitions_for_topic(self.topic)
        deadline = time.monotonic() + self.timeout_s
        while not parts and time.monotonic() < deadline:
            time.sleep(0.1)
            parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            raise RuntimeError(f"topic {self.topic!r} does not exist (no partitions found)")
        self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self._tps)
        self.consumer.seek_to_beginning(*self._tps)

    def catch_up(self, on_record: Callable | None = None) -> int:
        """Read to the current end; return how many records were read."""
        if not self._tps:
            self._assign()
        ends = self.consumer.end_offsets(self._tps)
        todo = {tp for tp in self._tps if self.consumer.position(tp) < ends[tp]}
        n = 0
        deadline = time.monotonic() + self.timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic!r} to its end within {self.timeout_s}s")
            batch = self.consumer.poll(timeout_ms=200, max_records=10_000)
            for tp, recs in batch.items():
                for rec in recs:
                    n += 1
                    if rec.key is None:
                        continue
                    if rec.value is None:
                        self.latest.pop(rec.key, None)
                    else:
                        self.latest[rec.key] = rec.value
                    if on_record is not None:
                        on_record(rec)
            todo = {tp for tp in todo if self.consumer.position(tp) < ends[tp]}
        return n

    def close(self) -> None:
        self.consumer.close(autocommit=False)
