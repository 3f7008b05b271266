"""The input partition rule (issue 10), pure: Kafka's default partitioner
(murmur2, as Java and kafka-python), librdkafka's default (CRC32) as the
usual culprit, and the check the join path runs per record."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2

from stopwise.daemon.partitioner import (LIBRDKAFKA, UNKNOWN, crc32_partition, key_partition,
                                         likely_partitioner, misplaced)


@given(st.binary(max_size=80), st.integers(1, 64))
def test_key_partition_is_kafka_pythons_default_partitioner(key, n):
    # kafka.partitioner.default.DefaultPartitioner: murmur2(key) & 0x7fffffff % len(all_partitions)
    assert key_partition(key, n) == (kafka_murmur2(key) & 0x7FFFFFFF) % n


@given(st.binary(min_size=1, max_size=80), st.integers(1, 64))
def test_crc32_partition_is_unsigned_crc32_mod_n(key, n):
    assert crc32_partition(key, n) == (zlib.crc32(key) & 0xFFFFFFFF) % n < n


@given(st.binary(min_size=1, max_size=40), st.integers(1, 16), st.integers(0, 15))
def test_misplaced_names_the_murmur2_partition_or_none(key, n, p):
    p %= n
    want = key_partition(key, n)
    assert misplaced(key, p, n) == (None if p == want else want)


def test_likely_partitioner_recognises_librdkafka_consistent():
    # keys murmur2 and CRC32 place differently on 4 partitions: a record on its CRC32 partition is librdkafka's
    keys = [f"req-{i}".encode() for i in range(200)]
    differ = [k for k in keys if key_partition(k, 4) != crc32_partition(k, 4)]
    assert len(differ) > 100
    for k in differ:
        assert likely_partitioner(k, crc32_partition(k, 4), 4) == LIBRDKAFKA
        other = next(p for p in range(4) if p not in (crc32_partition(k, 4), key_partition(k, 4)))
        assert likely_partitioner(k, other, 4) == UNKNOWN
    assert likely_partitioner(b"", 0, 4) == UNKNOWN   # librdkafka sends an empty key to a random partition
