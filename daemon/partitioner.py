"""Which input partition a record belongs on (issue 10): the pure rule.

The join shard ``join/p`` sees partition p of both input topics, so an
inference event and its feedback join only if their producers put the same
key on the same partition. The daemon's rule is Kafka's default (Java,
kafka-python's ``DefaultPartitioner``): ``(murmur2(key) & 0x7fffffff) % n``,
n the topic's partition count. A librdkafka client (kcat, confluent-kafka,
confluent-kafka-go, rust-rdkafka, node-rdkafka) defaults to
``consistent_random``: ``crc32(key) % n`` -- another partition for most keys.

>>> key_partition(b"r2", 4), crc32_partition(b"r2", 4)
(0, 3)
>>> misplaced(b"r2", 0, 4) is None, misplaced(b"r2", 3, 4)   # None: where it belongs; else where it should be
(True, 0)
>>> likely_partitioner(b"r2", 3, 4)
'librdkafka default (consistent_random/CRC32): set partitioner=murmur2_random'
>>> likely_partitioner(b"r2", 1, 4)
'unknown (custom or random partitioner)'
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from .context import murmur2_partition

LIBRDKAFKA = "librdkafka default (consistent_random/CRC32): set partitioner=murmur2_random"
UNKNOWN = "unknown (custom or random partitioner)"


@lru_cache(maxsize=65536)
def key_partition(key: bytes, n_partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among
    ``n_partitions``. Cached: the two halves of a request share the key, so
    the second one, arriving soon after, costs a dict look-up."""
    return murmur2_partition(key, n_partitions)


def crc32_partition(key: bytes, n_partitions: int) -> int:
    """The partition librdkafka's ``consistent``/``consistent_random``
    partitioner (its default) gives a non-empty ``key``."""
    return (zlib.crc32(key) & 0xFFFFFFFF) % max(1, n_partitions)


def misplaced(key: bytes, partition: int, n_partitions: int) -> int | None:
    """``None`` when a record with ``key`` on ``partition`` is where the
    murmur2 rule puts it, else the partition it belongs on."""
    want = key_partition(key, n_partitions)
    return None if want == partition else want


def likely_partitioner(key: bytes, partition: int, n_partitions: int) -> str:
    """A guess at the partitioner that put a misplaced record on ``partition``
    (for the operator: which producer setting to fix)."""
    if key and crc32_partition(key, n_partitions) == partition:
        return LIBRDKAFKA
    return UNKNOWN
