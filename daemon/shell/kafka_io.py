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

import random
import time
from typing import Callable

import kafka.errors as kerr
import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor

from ..config import Config
from ..errors import CatchUpTimeout, RetryableError, TopicMissing
from ..context import owner_partition  # noqa: F401 - re-export (the pure rule lives in daemon.context)

log = structlog.get_logger("stopwise.shell.kafka_io")

END_OFFSETS_TIMEOUT_S = 10.0
MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""Producer request cap: snapshots can be large (the topic's max.message.bytes
still applies)."""


def client_kwargs(cfg: Config) -> dict:
    """Connection settings shared by every client."""
    k = cfg.kafka
    return {"bootstrap_servers": k.bootstrap, "client_id": k.client_id,
            "security_protocol": k.security_protocol, "request_timeout_ms": k.request_timeout_ms}


# ---- error classification: the ONE place that decides retry vs exit -------------------
_FATAL = (
    kerr.AuthorizationError,            # topic/group/cluster ACLs
    kerr.SaslAuthenticationFailedError, kerr.UnsupportedSaslMechanismError, kerr.IllegalSaslStateError,
    kerr.KafkaConfigurationError,       # bad client settings
    kerr.UnsupportedVersionError,       # includes IncompatibleBrokerVersion
    kerr.FencedInstanceIdError,         # another member took our static group.instance.id
    kerr.InvalidGroupIdError, kerr.InvalidSessionTimeoutError, kerr.InconsistentGroupProtocolError,
    kerr.InvalidTopicError, kerr.IllegalStateError,  # e.g. "KafkaConsumer is closed": a bug, not an outage
)
_REJOIN = (
    # group membership out of date: the client resets its generation or requests a
    # re-join, and the next poll() re-joins; not flagged ``retriable`` by kafka-python
    kerr.CommitFailedError, kerr.UnknownMemberIdError, kerr.IllegalGenerationError,
    kerr.RebalanceInProgressError, kerr.MemberIdRequiredError,
    # a broker going away mid-request (kafka-python 2.x also had NoBrokersAvailable)
    kerr.BrokerNotAvailableError, kerr.KafkaConnectionError,
    *((getattr(kerr, "NoBrokersAvailable"),) if hasattr(kerr, "NoBrokersAvailable") else ()),
)


def is_retriable(exc: BaseException) -> bool:
    """Whether the run loop should back off and retry after ``exc`` (else it
    logs one line and exits 1). Connection loss, coordinator moves,
    rebalances, commits refused after one, request timeouts and catch-up
    timeouts are retriable; authorization, configuration, unsupported
    versions, a missing topic and anything that is not a Kafka error (a bug,
    lost output) are not. An unknown topic *partition* reported by the
    broker is retriable (kafka-python marks it so: metadata lags while a
    broker restarts); a topic that is missing when the daemon looks it up is
    :class:`~stopwise.daemon.errors.TopicMissing`, fatal.

    >>> is_retriable(kerr.KafkaConnectionError("down")), is_retriable(kerr.CommitFailedError())
    (True, True)
    >>> is_retriable(kerr.TopicAuthorizationFailedError()), is_retriable(ValueError("bug"))
    (False, False)
    """
    if isinstance(exc, _FATAL):
        return False
    if isinstance(exc, (_REJOIN, RetryableError, ConnectionError)):
        return True
    if isinstance(exc, kerr.KafkaError):
        if exc.retriable:
            return True
        # a rebalance listener that failed is re-raised by poll() as a bare KafkaError
        cause = exc.__cause__
        return cause is not None and cause is not exc and is_retriable(cause)
    return False


class Backoff:
    """Capped exponential backoff with full jitter: the n-th consecutive
    failure waits a uniform random time in [base, min(cap, base * 2**(n-1))];
    :meth:`reset` after a success.

    >>> b = Backoff(base_s=0.1, cap_s=1.0, rng=random.Random(1))
    >>> waits = [b.next() for _ in range(8)]
    >>> all(0.1 <= w <= min(1.0, 0.1 * 2 ** i) for i, w in enumerate(waits))
    True
    >>> b.attempt, b.reset(), b.attempt
    (8, None, 0)
    """

    def __init__(self, base_s: float = 0.1, cap_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        high = min(self.cap_s, self.base_s * 2 ** min(self.attempt - 1, 30))
        return self.rng.uniform(self.base_s, max(self.base_s, high))

    def reset(self) -> None:
        self.attempt = 0


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
            raise TopicMissing(self.topic)
        self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self._tps)
        self.consumer.seek_to_beginning(*self._tps)

    def catch_up(self, on_record: Callable | None = None) -> int:
        """Read to the current end; return how many records were read."""
        if not self._tps:
            self._assign()
        # bounded, so a broker that is away costs the caller (the run loop, which must keep
        # pinging the watchdog) at most this long: KafkaTimeoutError, retried by the loop
        ends = self.consumer.end_offsets(self._tps, timeout_ms=int(min(self.timeout_s, END_OFFSETS_TIMEOUT_S) * 1000))
        todo = {tp for tp in self._tps if self.consumer.position(tp) < ends[tp]}
        n = 0
        deadline = time.monotonic() + self.timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise CatchUpTimeout(self.topic, self.timeout_s)
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
