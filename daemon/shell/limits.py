"""Size limits of the daemon's outputs against the topics' real limits.

At start-up (:func:`check_topic_limits`) the topics' ``max.message.bytes``
are read from the broker and the configured limits checked against them, so
a record the broker would refuse (and the checkpoint would then refuse to
snapshot past: a crash loop, issue 13) is a clear start-up error instead:

* the DLQ topic must hold the largest DLQ copy (``limits.dlq_max_value_bytes``
  plus key, headers and framing, :func:`~.dlq.max_dlq_record_bytes`);
* the examples topic must hold one example of the largest accepted input
  record (``limits.max_record_bytes`` plus :data:`EXAMPLE_MARGIN`: an example
  is about as big as its inference event);
* the state topic must accept ``topics.state_max_message_bytes``.

Input topics that accept records above ``limits.max_record_bytes`` are only
noted: those records go to the DLQ (truncated there).

At each checkpoint (:func:`fit_snapshot`) a snapshot over the state limit is
shrunk (a join shard sheds its oldest pending halves, counted as evicted) or,
if it still does not fit, refused: logged, not sent; the previous snapshot
and its positions stand, and the daemon keeps running.

>>> from stopwise.daemon.config import parse_config
>>> cfg = parse_config({"limits": {"dlq_max_value_bytes": 2_000_000}})
>>> [level for level, _ in limit_problems(cfg, {cfg.topics.dlq: 1_048_588})]
['refuse']
"""

from __future__ import annotations

from typing import Any

import structlog

from ..config import Config
from ..errors import TopicsError
from .dlq import max_dlq_record_bytes

log = structlog.get_logger("stopwise.shell.limits")

EXAMPLE_MARGIN = 16 * 1024
"""An example record's bytes beyond its inference event's (feedback half, framing)."""
SNAPSHOT_MARGIN = 64 * 1024
"""Bytes kept free under the state topic's limit (record framing, headers)."""
SHRINK_ROUNDS = 4


def topic_max_message_bytes(cfg: Config, admin: Any = None) -> dict[str, int | None]:
    """``max.message.bytes`` of every configured topic (``None``: unknown)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from .topics import admin_client, topic_specs

    names = [s.name for s in topic_specs(cfg)]
    client = admin if admin is not None else admin_client(cfg, bootstrap_timeout_ms=5000)
    try:
        res = client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, configs=["max.message.bytes"]) for n in names],
            config_filter="all")
    finally:
        if admin is None:
            client.close()
    topics = res.get("topic", {}) if isinstance(res, dict) else {}
    out: dict[str, int | None] = {}
    for n in names:
        entry = (topics.get(n) or {}).get("max.message.bytes") or {}
        value = entry.get("value")
        out[n] = int(value) if value is not None and str(value).isdigit() else None
    return out


def limit_problems(cfg: Config, limits: dict[str, int | None]) -> list[tuple[str, str]]:
    """``(level, message)`` for each configured limit the topics cannot
    hold (``refuse``) or that is worth knowing (``warn``); pure."""
    t, lim = cfg.topics, cfg.limits
    out: list[tuple[str, str]] = []
    dlq = limits.get(t.dlq)
    need = max_dlq_record_bytes(lim.dlq_max_value_bytes)
    if dlq is not None and need > dlq:
        out.append(("refuse", f"limits.dlq_max_value_bytes={lim.dlq_max_value_bytes}: a DLQ copy can be {need} bytes "
                              f"with its key and headers, but topic {t.dlq} accepts max.message.bytes={dlq}; lower "
                              f"limits.dlq_max_value_bytes to {max(0, dlq - need + lim.dlq_max_value_bytes)} or raise "
                              f"the topic's max.message.bytes"))
    ex = limits.get(t.examples)
    need = lim.max_record_bytes + EXAMPLE_MARGIN
    if ex is not None and need > ex:
        out.append(("refuse", f"limits.max_record_bytes={lim.max_record_bytes}: an example of the largest accepted "
                              f"record can be {need} bytes, but topic {t.examples} accepts max.message.bytes={ex}; "
                              f"lower limits.max_record_bytes to {ex - EXAMPLE_MARGIN} or raise the topic's limit"))
    st = limits.get(t.state)
    if st is not None and st < t.state_max_message_bytes:
        out.append(("refuse", f"topics.state_max_message_bytes={t.state_max_message_bytes}, but topic {t.state} "
                              f"accepts max.message.bytes={st}; set topics.state_max_message_bytes to at most {st} "
                              f"or raise the topic's limit"))
    for topic in (t.inference, t.feedback):
        m = limits.get(topic)
        if m is not None and m > lim.max_record_bytes:
            out.append(("warn", f"topic {topic} accepts records up to {m} bytes, limits.max_record_bytes is "
                                f"{lim.max_record_bytes}: larger records go to the DLQ (their copy cut to "
                                f"limits.dlq_max_value_bytes={lim.dlq_max_value_bytes})"))
    return out


def check_topic_limits(cfg: Config, admin: Any = None, probe=topic_max_message_bytes) -> dict[str, int | None]:
    """Read the topics' limits, log what :func:`limit_problems` finds, raise
    :class:`TopicsError` for a refusal. If the limits cannot be read, warn
    and go on (the checks are a safety net, not a dependency)."""
    try:
        limits = probe(cfg, admin)
    except Exception as exc:
        log.warning("topic_limits_unknown", error=repr(exc), why="could not read max.message.bytes; limits unchecked")
        return {}
    problems = limit_problems(cfg, limits)
    for level, msg in problems:
        if level == "warn":
            log.info("topic_limits", note=msg)
    refusals = [msg for level, msg in problems if level == "refuse"]
    if refusals:
        raise TopicsError("; ".join(refusals))
    log.info("topic_limits_ok", max_message_bytes={k: v for k, v in limits.items() if v is not None})
    return limits


def fit_snapshot(shard, dump_state, now: float, key: bytes | None, max_message_bytes: int) -> bytes | None:
    """The encoded snapshot of ``shard`` if it fits ``max_message_bytes``
    (less :data:`SNAPSHOT_MARGIN`), after shedding the oldest pending halves
    of a join shard if needed; ``None`` (logged) if it cannot be made to fit."""
    limit = max(1, max_message_bytes - SNAPSHOT_MARGIN)
    blob = shard.snapshot(dump_state, now).encode(key)
    rounds = 0
    while len(blob) > limit and shard.kind == "join" and len(shard.obj) and rounds < SHRINK_ROUNDS:
        rounds += 1
        joiner = shard.obj
        before = joiner.pending_bytes
        target = int(before * (limit / len(blob)) * 0.8)
        evicted = joiner.shed(target)
        joiner.max_bytes = min(joiner.max_bytes, max(1, target))  # and stay under it (a reload resets it)
        log.error("snapshot_too_large", shard=shard.name, bytes=len(blob), limit=limit,
                  action="evicting the oldest pending halves", evicted=evicted, pending=len(joiner),
                  pending_bytes=joiner.pending_bytes)
        blob = shard.snapshot(dump_state, now).encode(key)
    if len(blob) > limit:
        log.error("snapshot_refused_too_large", shard=shard.name, bytes=len(blob), limit=limit,
                  action="not written; the previous snapshot and its positions stand (input after them is "
                         "replayed on restart); the daemon keeps running")
        return None
    return blob
