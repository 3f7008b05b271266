"""Issue 13, deliverables 2 and 5 without a broker: DLQ copies fit the DLQ
topic's limit, configured limits are checked against the topics' real ones,
join state is capped in bytes (so its snapshot is), a snapshot still too big
is shrunk or refused (never sent), and evictions are visible."""

from __future__ import annotations

import hashlib
import random
from collections import namedtuple

import pytest
from structlog.testing import capture_logs

from stopwise.daemon.config import Config, parse_config
from stopwise.daemon.context import ContextKeyer
from stopwise.daemon.core.engine import Controller, dump_state
from stopwise.daemon.core.join import Joiner, estimate_bytes
from stopwise.daemon.errors import TopicsError
from stopwise.daemon.metrics import Metrics
from stopwise.daemon.shell.dlq import DeadLetters, dlq_copy, max_dlq_record_bytes
from stopwise.daemon.shell.limits import SNAPSHOT_MARGIN, check_topic_limits, fit_snapshot, limit_problems
from stopwise.daemon.shell.processing import Processor
from stopwise.daemon.shell.shards import Shard
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

from daemon_helpers import FakeProducer

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
Rec = namedtuple("Rec", "topic partition offset key value headers")


def _record_size(key, value, headers) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) + 8 for k, v in headers) + 100


# ------------------------------------------------------------------ DLQ
@pytest.mark.parametrize("size", [1_048_400, 5_000_000])
def test_dlq_copy_of_a_1_048_400_byte_record_fits_the_default_limit(size: int) -> None:
    """Issue 13, reproduction 2: the broker accepts a 1,048,400-byte inference
    record; its DLQ copy (bytes + headers) used to exceed the DLQ topic's
    limit, the broker refused it and the daemon crash-looped (the same with
    5 MB when the input topic's limit is raised)."""
    cfg = Config()
    value = random.Random(1).randbytes(size)
    fake = FakeProducer()
    dlq = DeadLetters(fake, "dlq", Metrics(), cfg.limits.dlq_max_value_bytes)
    dlq.reject(Rec("stopwise.inference", 2, 41, b"k" * 5000, value, []), "too_large", "x" * 5000)
    (_, key, sent), headers = fake.sent[0], dict(fake.headers[0])
    assert _record_size(key, sent, fake.headers[0]) <= max_dlq_record_bytes(cfg.limits.dlq_max_value_bytes)
    assert max_dlq_record_bytes(cfg.limits.dlq_max_value_bytes) < BROKER_DEFAULT_MAX_MESSAGE_BYTES - 64 * 1024
    assert sent == value[: cfg.limits.dlq_max_value_bytes]
    assert headers["stopwise.original_size"] == str(size).encode()
    assert headers["stopwise.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["stopwise.truncated"] == b"key,value" and key == b"k" * 1024
    assert headers["stopwise.key_size"] == b"5000" and len(headers["stopwise.detail"]) <= 1000
    assert dlq.count == 1 and dlq.truncated == 1


def test_small_dlq_copies_are_unchanged_but_hashed() -> None:
    key, value, headers = dlq_copy(b"k", b"{bad", "bad_json", "d", "t", 0, 1, max_value_bytes=1024)
    hs = dict(headers)
    assert (key, value) == (b"k", b"{bad") and "stopwise.truncated" not in hs
    assert hs["stopwise.original_size"] == b"4" and hs["stopwise.sha256"] == hashlib.sha256(b"{bad").hexdigest().encode()
    assert dlq_copy(None, None, "bad_json", "empty", "t", 0, 1, 1024)[:2] == (None, None)


# ------------------------------------------------------------------ start-up limits
def test_limits_the_topics_cannot_hold_are_refused_with_the_fix() -> None:
    cfg = parse_config({"limits": {"dlq_max_value_bytes": 2_000_000, "max_record_bytes": 5_000_000},
                        "topics": {"state_max_message_bytes": 32 * 1024 * 1024}})
    t = cfg.topics
    found = limit_problems(cfg, {t.dlq: 1_048_588, t.examples: 1_048_588, t.state: 16 * 1024 * 1024,
                                 t.inference: 1_048_588, t.feedback: None})
    refused = [m for lvl, m in found if lvl == "refuse"]
    assert len(refused) == 3
    assert "limits.dlq_max_value_bytes=2000000" in refused[0] and t.dlq in refused[0]
    assert "limits.max_record_bytes=5000000" in refused[1] and t.examples in refused[1]
    assert "topics.state_max_message_bytes" in refused[2]
    with pytest.raises(TopicsError, match="dlq_max_value_bytes"):
        check_topic_limits(cfg, probe=lambda c, a: {t.dlq: 1_048_588})


def test_default_limits_fit_default_topics_and_an_unreadable_broker_only_warns() -> None:
    cfg = Config()
    t = cfg.topics
    defaults = {t.dlq: 1_048_588, t.examples: 1_048_588, t.state: t.state_max_message_bytes,
                t.inference: 1_048_588, t.feedback: 1_048_588}
    assert [lvl for lvl, _ in limit_problems(cfg, defaults)] == ["warn", "warn"]   # 1,048,588 > 1,000,000 input

    def down(c, a):
        raise ConnectionError("no broker")

    with capture_logs() as logs:
        assert check_topic_limits(cfg, probe=down) == {}
    assert [e["event"] for e in logs] == ["topic_limits_unknown"]


# ------------------------------------------------------------------ join bytes and snapshots
def _inference_flood(n: int, prefix: str = "p"):
    rng = random.Random(7)
    for i in range(n):
        inf, _ = to_events(make_request(rng, THREE_CONTEXTS[i % 3], f"{prefix}{i:07d}", 1.0), 1.0, 0.2)
        yield inf, inf.to_bytes()


def test_pending_inference_flood_keeps_the_join_snapshot_under_the_state_limit() -> None:
    """Issue 13, reproduction 3 at a smaller scale: pending inference events
    that never get feedback (under join.max_entries) made a join snapshot
    over the state topic's limit (16.9 MB > 16 MiB with 150k per shard).
    Here the limit is 256 KiB and 6,000 events arrive (3 MB on the wire)."""
    cfg = parse_config({"topics": {"state_max_message_bytes": 256 * 1024}})
    joiner = Joiner.from_config(cfg)
    assert joiner.max_bytes == 3 * 256 * 1024 and joiner.max_entries == 200_000
    wire = 0
    for i, (inf, raw) in enumerate(_inference_flood(6000)):
        joiner.add_inference(inf, float(i), len(raw))
        wire += len(raw)
    assert wire > 3 * joiner.max_bytes
    assert joiner.pending_bytes <= joiner.max_bytes and joiner.stats.pending_bytes == joiner.pending_bytes
    assert joiner.stats.evicted == 6000 - len(joiner) > 0
    oldest = next(iter(joiner._pending))
    assert oldest > "p0000000"  # the oldest went first
    shard = Shard("join/0", "join", 0, joiner, {"t.inference:0": 6000})
    with capture_logs() as logs:
        blob = fit_snapshot(shard, dump_state, 1.0, None, cfg.topics.state_max_message_bytes)
    assert blob is not None and len(blob) <= cfg.topics.state_max_message_bytes - SNAPSHOT_MARGIN
    assert not [e for e in logs if e["event"].startswith("snapshot_")]   # fit without shedding


def test_join_bytes_are_accounted_on_join_expiry_and_estimate() -> None:
    j = Joiner(ttl_s=10, max_entries=100, keyer=ContextKeyer(("task",)), max_bytes=10**9)
    rng = random.Random(2)
    pairs = [to_events(make_request(rng, THREE_CONTEXTS[0], f"r{i}", 1.0), 1.0, 0.2) for i in range(4)]
    for inf, fb in pairs:
        assert estimate_bytes(inf) >= len(inf.to_bytes()) * 0.8 and estimate_bytes(fb) >= len(fb.to_bytes()) * 0.8
    j.add_inference(pairs[0][0], 1.0, 500)
    j.add_feedback(pairs[1][1], 1.0, 100)
    j.add_inference(pairs[2][0], 1.0)
    assert j.pending_bytes == 600 + estimate_bytes(pairs[2][0])
    j.add_feedback(pairs[0][1], 2.0, 100)            # completes r0: its 500 bytes go
    assert j.pending_bytes == 100 + estimate_bytes(pairs[2][0])
    j.expire(100.0)
    assert j.pending_bytes == 0 == j.stats.pending_bytes and len(j) == 0


def test_a_snapshot_still_too_big_is_shrunk_or_refused_never_sent_too_big() -> None:
    cfg = Config()
    joiner = Joiner(3600, 200_000, ContextKeyer(cfg.context.dimensions), max_bytes=10**9)
    for i, (inf, raw) in enumerate(_inference_flood(3000, "s")):
        joiner.add_inference(inf, float(i), len(raw))
    shard = Shard("join/1", "join", 1, joiner, {})
    limit = SNAPSHOT_MARGIN + 100 * 1024
    with capture_logs() as logs:
        blob = fit_snapshot(shard, dump_state, 1.0, None, limit)
    assert blob is not None and len(blob) <= limit - SNAPSHOT_MARGIN
    assert 0 < len(joiner) < 3000 and joiner.stats.evicted == 3000 - len(joiner)
    assert joiner.max_bytes < 10**9   # and it stays under: later arrivals evict
    assert logs[0]["event"] == "snapshot_too_large" and logs[0]["shard"] == "join/1"
    ctl = Controller(cfg)
    with capture_logs() as logs:
        assert fit_snapshot(Shard("learn/0", "learn", 0, ctl, {}), dump_state, 1.0, None, SNAPSHOT_MARGIN + 100) is None
    assert logs[-1]["event"] == "snapshot_refused_too_large" and logs[-1]["log_level"] == "error"


# ------------------------------------------------------------------ flood visibility
def test_evictions_raise_the_metric_and_one_rate_limited_warning(monkeypatch) -> None:
    from stopwise.daemon.shell import processing
    from stopwise.daemon.shell.runner import Daemon

    cfg = parse_config({"join": {"max_entries": 100}})
    d = Daemon(cfg, lag_monitor=False)
    joiner = Joiner.from_config(cfg)
    d.shards = {"join/0": Shard("join/0", "join", 0, joiner, {})}
    proc = Processor(d, DeadLetters(FakeProducer(), cfg.topics.dlq))
    flood = _inference_flood(400, "f")
    with capture_logs() as logs:
        for _ in range(3):   # three ticks, 100 unknown ids more each
            for _ in range(100 + 30):
                inf, raw = next(flood)
                joiner.add_inference(inf, 1.0, len(raw))
            proc.refresh_gauges()
    warned = [e for e in logs if e["event"] == "join_evicting"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"   # rate-limited: one per minute
    assert warned[0]["evicted"] == 30 and warned[0]["rate_per_s"] > 0 and warned[0]["max_entries"] == 100
    reg = d.metrics.registry
    assert reg.get_sample_value("stopwise_join_evicted_total") == joiner.stats.evicted == 290
    assert reg.get_sample_value("stopwise_join_pending_bytes") == joiner.pending_bytes > 0
    monkeypatch.setattr(processing, "EVICTION_WARN_EVERY_S", 0.0)
    with capture_logs() as logs:
        joiner.add_inference(next(flood)[0], 1.0)
        proc.refresh_gauges()
    assert [e["evicted"] for e in logs if e["event"] == "join_evicting"] == [261]   # the rest, told at last
