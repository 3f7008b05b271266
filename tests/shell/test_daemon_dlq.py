"""Done-when 2: malformed records land in the DLQ with their original bytes
and reason headers, counted, and the daemon keeps going."""

from __future__ import annotations

import json
import random

from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events

from daemon_helpers import producer_for, read_topic, send_events, wait_until


def _valid_inference(rid: str) -> dict:
    return {"v": 1, "request_id": rid, "ts": 1.0, "context": {"task": "qa"}, "threshold": 1.0,
            "stop_index": 1, "tokens_used": 20, "tokens_budget": 20,
            "checkpoints": [[10, 0.5, "a"], [20, 0.9, "b"]]}


def test_malformed_records_go_to_the_dlq_and_the_daemon_keeps_going(make_config, daemon_thread) -> None:
    cfg = make_config(limits={"max_record_bytes": 4096})
    d = daemon_thread(cfg).daemon
    nan_score = json.dumps(dict(_valid_inference("nan"), checkpoints=[[10, float("nan"), "a"], [20, 0.9, "b"]])).encode()
    bad = [  # (topic, key, value, expected reason)
        (cfg.topics.inference, b"k-json", b'{"v": 1, "request_id": ', "bad_json"),
        (cfg.topics.inference, b"k-nan", nan_score, "not_finite"),
        (cfg.topics.inference, b"k-ver", json.dumps(dict(_valid_inference("ver"), v=2)).encode(), "unknown_version"),
        (cfg.topics.inference, b"k-big", json.dumps(dict(_valid_inference("big"), pad="x" * 5000)).encode(), "too_large"),
        (cfg.topics.inference, b"k-cps", json.dumps(dict(_valid_inference("cps"),
                                                        checkpoints=[[20, 0.5, "a"], [10, 0.9, "b"]])).encode(),
         "checkpoints_not_increasing"),
        (cfg.topics.feedback, b"k-fb", b'{"v": 1, "request_id": "x", "ts": 1.0}', "missing_field"),
        (cfg.topics.examples, b"k-ex", b"\xff\xfe not an example", "bad_json"),
    ]
    producer = producer_for(cfg)
    try:
        for topic, key, value, _ in bad:
            producer.send(topic, key=key, value=value)
        producer.flush(30)
        rng = random.Random(3)
        reqs = [make_request(rng, THREE_CONTEXTS[i % 3], f"ok{i}", ts=float(i)) for i in range(30)]
        send_events(producer, cfg, (to_events(r, 1.0, 0.0) for r in reqs))
    finally:
        producer.close()

    wait_until(lambda: d.processor.learned_labelled >= 30, 60, what="valid events after the bad ones to be learned")
    dlq = wait_until(lambda: (recs := read_topic(cfg, cfg.topics.dlq)) and len(recs) >= len(bad) and recs,
                     60, what="DLQ records")
    assert len(dlq) == len(bad)
    by_key = {r.key: r for r in dlq}
    for topic, key, value, reason in bad:
        rec = by_key[key]
        headers = {k: v.decode() for k, v in rec.headers}
        assert rec.value == value, key
        assert headers["stopwise.reason"] == reason, (key, headers)
        assert headers["stopwise.topic"] == topic
        assert int(headers["stopwise.offset"]) >= 0 and headers["stopwise.detail"]
        assert d.metrics.registry.get_sample_value(
            "stopwise_rejected_total", {"topic": topic, "reason": reason}) >= 1
    assert d.processor.learned_labelled == 30 and d.dlq.count == len(bad)
