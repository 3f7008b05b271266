"""Publishing threshold records: version floor per context (versions only grow,
across restarts too), HMAC signature, the compacted thresholds topic and the
audit (decisions) topic.

The Controller numbers its own versions from 1 in each process; the shell
keeps the highest version seen on the thresholds topic per context and lifts
a record's version above it before signing. Only records that verify (when
a key is configured) feed the floor, and versions stay within int64: a
record at or above :data:`VERSION_CEILING` is ignored (a forged 2^63 - 1
cannot push every later version past what readers can hold).

>>> vf = VersionFloor()
>>> _ = vf.observe("task=qa", 7); vf.next("task=qa", 1), vf.next("task=qa", 12), vf.next("*", 1)
(8, 12, 1)
>>> vf.observe("task=qa", 2**63 - 1), vf.next("task=qa", 1)
(False, 13)
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from ..core.reasons import reason_code
from ..records import MAX_VERSION, ThresholdRecord, decode_threshold
from ..signing import sign_record, verify_record
from ..errors import DecodeError

log = structlog.get_logger("stopwise.shell.publisher")

VERSION_CEILING = MAX_VERSION - 2**32
"""Versions at or above this are not believed (int64 minus room for 2^32
more publications)."""


class VersionFloor:
    """Highest version seen per context; ``next`` returns a strictly larger one."""

    def __init__(self) -> None:
        self.max: dict[str, int] = {}

    def observe(self, context: str, version: int) -> bool:
        """Raise the floor of ``context``; False (ignored) at or above the ceiling."""
        if not 0 <= version < VERSION_CEILING:
            return False
        if version > self.max.get(context, 0):
            self.max[context] = version
        return True

    def next(self, context: str, proposed: int) -> int:
        if not 0 < proposed < VERSION_CEILING:
            proposed = 1
        v = self.max.get(context, 0) + 1
        if v > MAX_VERSION:  # unreachable: the floor stays below the ceiling
            raise OverflowError(f"version of {context!r} would exceed int64")
        v = max(proposed, v)
        self.max[context] = v
        return v


def signed_record_dict(record: ThresholdRecord, version: int, key: bytes | None) -> dict[str, Any]:
    """The record as a JSON-ready dict with ``version`` set and ``sig`` computed."""
    body = record.model_dump(mode="json")
    body["version"] = version
    body["sig"] = None
    return sign_record(body, key)


def read_threshold(value: bytes, key: bytes | None) -> ThresholdRecord | None:
    """Decode a thresholds-topic value; ``None`` if malformed, its signature
    fails (when a key is configured) or its version is at or above
    :data:`VERSION_CEILING`."""
    try:
        rec = decode_threshold(value)
    except DecodeError:
        return None
    if key and not verify_record(json.loads(value), key):
        return None
    if rec.version >= VERSION_CEILING:
        return None
    return rec


class Publisher:
    """Signs and produces decisions; counts them in metrics."""

    def __init__(self, producer, thresholds_topic: str, decisions_topic: str, key: bytes | None,
                 metrics=None) -> None:
        self.producer = producer
        self.thresholds_topic, self.decisions_topic = thresholds_topic, decisions_topic
        self.key = key
        self.metrics = metrics
        self.versions = VersionFloor()
        self.published = 0
        self.ignored = 0  # thresholds-topic records not believed (unverified, malformed, version too high)

    def observe_topic_value(self, value: bytes) -> None:
        """Feed a value read from the thresholds topic to the floor: only a
        record that decodes, verifies (when a key is configured) and has a
        version below the ceiling counts; others are counted and logged."""
        rec = read_threshold(value, self.key)
        if rec is None:
            self.ignored += 1
            log.warning("threshold_record_ignored", bytes=len(value),
                        why="malformed, unverified or version beyond the int64 ceiling",
                        action="not used for the version floor")
            return
        self.versions.observe(rec.context, rec.version)

    def publish(self, decision) -> dict[str, Any]:
        """Publish one core Decision; return the signed record dict."""
        rec: ThresholdRecord = decision.record
        version = self.versions.next(rec.context, rec.version)
        body = signed_record_dict(rec, version, self.key)
        value = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        ctx_key = rec.context.encode()
        self.producer.send(self.thresholds_topic, key=ctx_key, value=value)
        self.producer.send(self.decisions_topic, key=ctx_key,
                           value=json.dumps(decision.audit(body), separators=(",", ":"), allow_nan=False).encode())
        self.published += 1
        if self.metrics is not None:
            self.metrics.thresholds_published.labels(
                reason=reason_code(decision.reason or rec.reason, decision.previous_threshold)).inc()
        log.info("threshold_published", context=rec.context, threshold=rec.threshold,
                 explore_rate=rec.explore_rate, version=version, reason=decision.reason,
                 **({} if self.key else {"signing": "UNSIGNED"}))
        return body
