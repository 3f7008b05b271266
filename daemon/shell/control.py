"""Operator control records on the state topic (key ``control/kill_switch``)
and the kill-switch command's work.

The record is signed JSON (same HMAC as threshold records). The running
daemon reads the state topic each tick and applies a changed, verified
record via ``Controller.set_kill_switch``; the command also publishes
threshold 1.0 for every context already on the thresholds topic, so the
switch works while the daemon is down.

>>> rec = control_record(True, 10.0, b"k")
>>> parse_control(json.dumps(rec).encode(), b"k")["on"], parse_control(json.dumps(rec).encode(), b"x")
(True, None)
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import structlog

from ..config import Config, require_signing
from ..records import ThresholdRecord
from ..signing import sign_record, verify_record
from ..stoprule import NO_EARLY_STOP

log = structlog.get_logger("stopwise.shell.control")

KILL_SWITCH_KEY = b"control/kill_switch"


def control_record(on: bool, now: float, key: bytes | None, who: str = "cli") -> dict[str, Any]:
    return sign_record({"v": 1, "kind": "kill_switch", "on": bool(on), "issued_at": now, "by": who}, key)


def parse_control(value: bytes | None, key: bytes | None) -> dict[str, Any] | None:
    """The control record, or ``None`` if malformed or not verified."""
    if not value:
        return None
    try:
        obj = json.loads(value)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("kind") != "kill_switch" or not isinstance(obj.get("on"), bool):
        return None
    if not verify_record(obj, key):
        return None
    return obj


def kill_records(latest: dict[str, ThresholdRecord], now: float, ttl_s: float) -> list[ThresholdRecord]:
    """Threshold 1.0 (no early stop) for each context, version + 1.

    >>> r = ThresholdRecord(context="*", threshold=0.8, explore_rate=0.1, version=4, issued_at=0, expires_at=9, policy="reference")
    >>> [(k.threshold, k.version, k.reason) for k in kill_records({"*": r}, 1.0, 60.0)]
    [(1.0, 5, 'kill_switch')]
    """
    out = []
    for ctx, rec in sorted(latest.items()):
        out.append(rec.model_copy(update={
            "threshold": NO_EARLY_STOP, "version": rec.version + 1, "issued_at": now,
            "expires_at": now + ttl_s, "reason": "kill_switch", "sig": None}))
    return out


def apply_kill_switch(cfg: Config, on: bool, *, clock: Callable[[], float] = time.time,
                      producer=None, reader=None) -> dict[str, Any]:
    """Write the control record; when ``on``, also publish 1.0 for every known
    context. Returns a summary (contexts published)."""
    from .kafka_io import CompactedView, make_producer, make_reader
    from .publisher import read_threshold, signed_record_dict

    key = require_signing(cfg)
    now = clock()
    own_producer = producer is None
    producer = producer or make_producer(cfg)
    try:
        published: list[str] = []
        if on:
            view = CompactedView(cfg.topics.thresholds, reader or make_reader(cfg))
            try:
                view.catch_up()
            finally:
                view.close()
            latest = {}
            for k, v in view.latest.items():
                rec = read_threshold(v, key)
                if rec is not None:
                    latest[rec.context] = rec
            for rec in kill_records(latest, now, cfg.publish.record_ttl_s):
                body = signed_record_dict(rec, rec.version, key)
                data = json.dumps(body, separators=(",", ":")).encode()
                producer.send(cfg.topics.thresholds, key=rec.context.encode(), value=data)
                audit = dict(body, previous_threshold=latest[rec.context].threshold)
                producer.send(cfg.topics.decisions, key=rec.context.encode(),
                              value=json.dumps(audit, separators=(",", ":")).encode())
                published.append(rec.context)
            producer.flush()  # thresholds first: a daemon that sees the control record sees their versions
        producer.send(cfg.topics.state, key=KILL_SWITCH_KEY,
                      value=json.dumps(control_record(on, now, key)).encode())
        producer.flush()
    finally:
        if own_producer:
            producer.close()
    log.info("kill_switch_written", on=on, contexts=len(published))
    return {"on": on, "contexts": published}
