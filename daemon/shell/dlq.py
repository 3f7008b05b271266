"""The dead-letter queue: rejected input goes out with its original key and
value bytes and headers saying why and where it came from.

Size-safe (issue 13: a 1,048,400-byte inference record, accepted by the
broker, made a DLQ copy over the DLQ topic's limit; the broker refused it and
the daemon crash-looped): the copy keeps at most ``max_value_bytes`` of the
value (``limits.dlq_max_value_bytes``) and :data:`MAX_KEY_BYTES` of the key;
``stopwise.original_size`` and ``stopwise.sha256`` (of the whole original
value) are always set, ``stopwise.truncated`` names what was cut
(``value``, ``key`` or ``key,value``), and for a cut key
``stopwise.key_size``/``stopwise.key_sha256`` say what it was. So a DLQ
record is never bigger than :func:`max_dlq_record_bytes`.

>>> hs = dict(dlq_headers("bad_json", "Expecting value", "stopwise.inference", 2, 41))
>>> hs["stopwise.reason"], hs["stopwise.offset"]
(b'bad_json', b'41')
>>> key, value, hs = dlq_copy(b"k", b"x" * 5000, "too_large", "big", "t", 0, 7, max_value_bytes=1024)
>>> len(value), dict(hs)["stopwise.original_size"], dict(hs)["stopwise.truncated"]
(1024, b'5000', b'value')
"""

from __future__ import annotations

import hashlib

from ..errors import DecodeError

REASONS = DecodeError.REASONS + ("processing_error", "no_key")
"""Every ``stopwise.reason`` a DLQ record carries: the decode reasons, a core
error on a valid record (``processing_error``), an input record without a key
(``no_key``: it cannot be placed on its join shard, see :mod:`.reroute`)."""
MAX_DETAIL = 1000
"""Bytes of the human-readable detail header (cut at a character boundary)."""
MAX_KEY_BYTES = 1024
"""Bytes of the original key kept in the DLQ copy."""
HEADERS_MAX_BYTES = 2048
"""Upper bound of the DLQ headers (names, values and per-header overhead):
the detail (MAX_DETAIL), a 64-char hash or two, topic name (<= 249), numbers."""
RECORD_OVERHEAD = 256
"""Record and record-batch framing, with margin."""

HEADER_REASON = "stopwise.reason"
HEADER_DETAIL = "stopwise.detail"
HEADER_TOPIC = "stopwise.topic"
HEADER_PARTITION = "stopwise.partition"
HEADER_OFFSET = "stopwise.offset"
HEADER_SIZE = "stopwise.original_size"
HEADER_SHA256 = "stopwise.sha256"
HEADER_TRUNCATED = "stopwise.truncated"
HEADER_KEY_SIZE = "stopwise.key_size"
HEADER_KEY_SHA256 = "stopwise.key_sha256"


def max_dlq_record_bytes(max_value_bytes: int) -> int:
    """The largest DLQ record (batch included) a value cap gives.

    >>> max_dlq_record_bytes(900_000) < 1_048_588   # the broker's default max.message.bytes
    True
    """
    return max_value_bytes + MAX_KEY_BYTES + HEADERS_MAX_BYTES + RECORD_OVERHEAD


def _cut(text: str, limit: int) -> bytes:
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore").encode()


def dlq_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Kafka headers of a DLQ record (values are UTF-8 bytes)."""
    return [
        (HEADER_REASON, _cut(reason, 64)),
        (HEADER_DETAIL, _cut(detail, MAX_DETAIL)),
        (HEADER_TOPIC, _cut(topic, 255)),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
    ]


def dlq_copy(key: bytes | None, value: bytes | None, reason: str, detail: str, topic: str, partition: int,
             offset: int, max_value_bytes: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of the DLQ copy of a record (see module doc)."""
    headers = dlq_headers(reason, detail, topic, partition, offset)
    cut = []
    if value is not None:
        headers += [(HEADER_SIZE, str(len(value)).encode()),
                    (HEADER_SHA256, hashlib.sha256(value).hexdigest().encode())]
        if len(value) > max_value_bytes:
            value = bytes(value[:max_value_bytes])
            cut.append("value")
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers += [(HEADER_KEY_SIZE, str(len(key)).encode()),
                    (HEADER_KEY_SHA256, hashlib.sha256(key).hexdigest().encode())]
        key = bytes(key[:MAX_KEY_BYTES])
        cut.insert(0, "key")
    if cut:
        headers.append((HEADER_TRUNCATED, ",".join(cut).encode()))
    return key, value, headers


class DeadLetters:
    """Sends rejected records to the DLQ topic (size-safe copies) and counts them."""

    def __init__(self, producer, topic: str, metrics=None, max_value_bytes: int = 900_000) -> None:
        self.producer, self.topic, self.metrics = producer, topic, metrics
        self.max_value_bytes = int(max_value_bytes)
        self.count = 0
        self.truncated = 0

    def reject(self, rec, reason: str, detail: str) -> None:
        """``rec`` is a kafka ConsumerRecord; its bytes are forwarded, cut to the caps."""
        key, value, headers = dlq_copy(rec.key, rec.value, reason, detail, rec.topic, rec.partition, rec.offset,
                                       self.max_value_bytes)
        if headers[-1][0] == HEADER_TRUNCATED:
            self.truncated += 1
        self.producer.send(self.topic, key=key, value=value, headers=headers)
        self.count += 1
        if self.metrics is not None:
            self.metrics.rejected.labels(topic=rec.topic, reason=reason).inc()
