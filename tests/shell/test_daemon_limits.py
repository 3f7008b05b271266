"""Issue 13 on the real broker: no single record or flood of pending halves
makes the daemon produce a record the broker refuses (which crash-looped
it), and limits the topics cannot hold are refused at start."""

from __future__ import annotations

import hashlib
import json
import random
import threading

from kafka import KafkaProducer

from stopwise.daemon.shell.kafka_io import client_kwargs
from stopwise.daemon.shell.runner import Daemon
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

from daemon_helpers import batch, latest_snapshots, producer_for, read_topic, send_events, wait_until


def test_a_record_just_under_the_broker_limit_goes_to_the_dlq_cut_and_the_daemon_lives(make_config,
                                                                                        daemon_thread) -> None:
    """Reproduction 2: the broker accepts a 1,048,400-byte inference record
    (default max.message.bytes 1,048,588); its DLQ copy used to be refused,
    and the daemon exited 1 on every restart."""
    cfg = make_config()
    d = daemon_thread(cfg).daemon
    big = json.dumps({"v": 1, "request_id": "big", "pad": ""}).encode()
    big = big.replace(b'"pad": ""', b'"pad": "' + b"x" * (1_048_400 - len(big)) + b'"')
    assert len(big) == 1_048_400
    producer = KafkaProducer(**client_kwargs(cfg), acks="all", max_request_size=2_000_000)
    try:
        producer.send(cfg.topics.inference, key=b"big", value=big).get(30)
        send_events(producer, cfg, batch("after", 30, 11))
    finally:
        producer.close()
    wait_until(lambda: d.processor.learned >= 30, 90, what="the valid events after the big one")
    dlq = wait_until(lambda: read_topic(cfg, cfg.topics.dlq), 60, what="the DLQ copy")
    (rec,) = dlq
    headers = {k: v for k, v in rec.headers}
    assert headers["stopwise.reason"] == b"too_large" and headers["stopwise.truncated"] == b"value"
    assert rec.value == big[: cfg.limits.dlq_max_value_bytes]
    assert headers["stopwise.original_size"] == b"1048400"
    assert headers["stopwise.sha256"] == hashlib.sha256(big).hexdigest().encode()
    wait_until(lambda: d.snapshots_written > 0, 30, what="a checkpoint after the DLQ copy")
    assert d.processor.learned >= 30 and d.dlq.count == 1


def test_a_flood_of_pending_inference_keeps_snapshots_under_the_state_limit(make_config, daemon_thread) -> None:
    """Reproduction 3, scaled down: 150k pending inference events per shard
    made a snapshot over the state topic's limit (exit 1, again on restart).
    Here: a 160 KiB state limit and 3,000 pending events per join shard."""
    limit = 160 * 1024
    cfg = make_config(topics={"state_max_message_bytes": limit})
    thread = daemon_thread(cfg)
    d = thread.daemon
    rng = random.Random(5)
    producer = producer_for(cfg)
    try:
        for i in range(6000):
            inf, _ = to_events(make_request(rng, THREE_CONTEXTS[i % 3], f"flood-{i:06d}", 1.0), 1.0, 0.2)
            producer.send(cfg.topics.inference, key=inf.request_id.encode(), value=inf.to_bytes())
        producer.flush(60)
    finally:
        producer.close()
    def joined_to() -> int:
        return sum(sh.positions.get(f"{cfg.topics.inference}:{sh.partition}", 0)
                   for sh in list(d.shards.values()) if sh.kind == "join")

    wait_until(lambda: joined_to() >= 6000, 120, what="the flood read to its end")
    assert thread.stop() == 0
    evicted = d.metrics.registry.get_sample_value("stopwise_join_evicted_total")
    assert evicted > 0 and d.snapshots_refused == 0
    snaps = latest_snapshots(cfg)
    joins = {n: s for n, s in snaps.items() if n.startswith("join/")}
    assert set(joins) == {"join/0", "join/1"}
    # every snapshot landed (the broker refuses larger ones), and it reflects the whole flood
    assert sum(s.positions[f"{cfg.topics.inference}:{n[-1]}"] for n, s in joins.items()) == 6000
    assert sum(int(s.meta["evicted"]) for s in joins.values()) >= evicted
    assert sum(int(s.meta["pending"]) + int(s.meta["evicted"]) for s in joins.values()) == 6000


def test_limits_the_topics_cannot_hold_are_refused_at_start(make_config) -> None:
    cfg = make_config(limits={"dlq_max_value_bytes": 2_000_000})
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        rc = Daemon(cfg, lag_monitor=False).run(threading.Event())
    assert rc == 1
    fatal = [e for e in logs if e["event"] == "daemon_fatal"]
    assert fatal and "limits.dlq_max_value_bytes=2000000" in fatal[0]["error"] and cfg.topics.dlq in fatal[0]["error"]


def test_a_feedback_weight_of_1e300_goes_to_the_dlq_and_the_daemon_lives(make_config, daemon_thread) -> None:
    """Reproduction 1: a feedback weight of 1e300 made n_eff NaN, the tick
    raised building the threshold record, the daemon exited 1 and its
    shutdown snapshot saved the poison. Also `em: true` / `v: true`."""
    cfg = make_config()
    thread = daemon_thread(cfg)
    d = thread.daemon
    pairs = batch("w", 40, 12)
    producer = producer_for(cfg)
    poison = {"1e300": {"weight": 1e300}, "em-true": {"em": True}, "v-true": {"v": True}}
    try:
        for i, (inf, fb) in enumerate(pairs):
            producer.send(cfg.topics.inference, key=inf.request_id.encode(), value=inf.to_bytes())
            body = json.loads(fb.to_bytes())
            if i < len(poison):
                body.update(list(poison.values())[i])
            producer.send(cfg.topics.feedback, key=fb.request_id.encode(), value=json.dumps(body).encode())
        producer.flush(30)
    finally:
        producer.close()
    def read_to() -> int:
        return sum(sh.positions.get(f"{t}:{sh.partition}", 0) for sh in list(d.shards.values())
                   if sh.kind == "join" for t in (cfg.topics.inference, cfg.topics.feedback))

    wait_until(lambda: d.dlq.count >= 3 and read_to() >= 80 and d.processor.learned >= 40, 90,
               what=lambda: f"DLQ {d.dlq.count}, read to {read_to()}, learned {d.processor.learned}")
    ticks = d.ticks
    wait_until(lambda: d.ticks > ticks + 2, 30, what="ticks after the poison")
    assert thread.stop() == 0
    reasons = sorted((dict(r.headers)["stopwise.reason"], dict(r.headers)["stopwise.detail"].split(b":")[0])
                     for r in read_topic(cfg, cfg.topics.dlq))
    assert reasons == [(b"invalid_value", b"em"), (b"invalid_value", b"v"), (b"out_of_range", b"weight")]
