"""Helpers for the client tests: produce keyed records, wait for a condition."""

from __future__ import annotations

import time
from typing import Callable


def produce(bootstrap: str, topic: str, items: list[tuple[str, bytes | None]], flush_timeout: float = 30.0) -> None:
    """Send ``(key, value)`` records (value ``None`` = tombstone) and wait for them."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap)
    for k, v in items:
        p.send(topic, key=k.encode(), value=v)
    p.flush(flush_timeout)
    p.close()


def wait_for(cond: Callable[[], object], timeout: float) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` s have passed; its last value, as a bool."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())
