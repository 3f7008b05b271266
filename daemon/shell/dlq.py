"""The dead-letter queue: rejected input goes out with its original key and
value bytes and headers saying why and where it came from.

>>> hs = dict(dlq_headers("bad_json", "Expecting value", "stopwise.inference", 2, 41))
>>> hs["stopwise.reason"], hs["stopwise.offset"]
(b'bad_json', b'41')
"""

from __future__ import annotations

MAX_DETAIL = 1000

HEADER_REASON = "stopwise.reason"
HEADER_DETAIL = "stopwise.detail"
HEADER_TOPIC = "stopwise.topic"
HEADER_PARTITION = "stopwise.partition"
HEADER_OFFSET = "stopwise.offset"


def dlq_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Kafka headers of a DLQ record (values are UTF-8 bytes)."""
    return [
        (HEADER_REASON, reason.encode()),
        (HEADER_DETAIL, detail[:MAX_DETAIL].encode("utf-8", "replace")),
        (HEADER_TOPIC, topic.encode()),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
    ]


class DeadLetters:
    """Sends rejected records to the DLQ topic and counts them."""

    def __init__(self, producer, topic: str, metrics=None) -> None:
        self.producer, self.topic, self.metrics = producer, topic, metrics
        self.count = 0

    def reject(self, rec, reason: str, detail: str) -> None:
        """``rec`` is a kafka ConsumerRecord; its bytes are forwarded unchanged."""
        self.producer.send(self.topic, key=rec.key, value=rec.value,
                           headers=dlq_headers(reason, detail, rec.topic, rec.partition, rec.offset))
        self.count += 1
        if self.metrics is not None:
            self.metrics.rejected.labels(topic=rec.topic, reason=reason).inc()
