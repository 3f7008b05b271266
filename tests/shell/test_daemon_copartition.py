"""Issue 10 on the real broker: inference events from the project's
publisher (kafka-python, murmur2) and feedback from a confluent-kafka
producer with librdkafka's default partitioner (CRC32) on 4-partition input
topics: every request still joins (the misplaced feedback is re-routed), and
a keyless record goes to the DLQ as ``no_key``."""

from __future__ import annotations

import pytest

from stopwise.clients.publisher import EventPublisher
from stopwise.daemon.partitioner import crc32_partition, key_partition

from daemon_helpers import batch, producer_for, read_topic, wait_until

confluent_kafka = pytest.importorskip("confluent_kafka")
N_REQ = 300


def test_librdkafka_default_partitioner_feedback_still_joins(make_config, daemon_thread) -> None:
    cfg = make_config(topics={"input_partitions": 4})
    d = daemon_thread(cfg).daemon
    pairs = batch("cp", N_REQ, seed=10)
    pub = EventPublisher(cfg.kafka.bootstrap, cfg.topics.inference, cfg.topics.feedback)
    try:
        for inf, _ in pairs:
            pub.inference(inf)
        assert pub.flush(60) == 0
    finally:
        pub.close(10)
    rdk = confluent_kafka.Producer({"bootstrap.servers": cfg.kafka.bootstrap})   # default partitioner
    for _, fb in pairs:
        rdk.produce(cfg.topics.feedback, key=fb.request_id.encode(), value=fb.to_bytes())
    assert rdk.flush(60) == 0
    kp = producer_for(cfg)
    try:
        kp.send(cfg.topics.feedback, key=None, value=pairs[0][1].to_bytes())
        kp.flush(30)
    finally:
        kp.close()

    reg = d.metrics.registry
    wait_until(lambda: d.processor.joined >= N_REQ, 90,
               what=lambda: f"{N_REQ} joined, got {d.processor.joined} (rerouted {d.processor.reroute.rerouted})")
    moved = reg.get_sample_value("stopwise_input_rerouted_total", {"topic": cfg.topics.feedback})
    expected = sum(key_partition(fb.request_id.encode(), 4) != crc32_partition(fb.request_id.encode(), 4)
                   for _, fb in pairs)
    assert expected > 100 and moved == expected
    assert not reg.get_sample_value("stopwise_input_rerouted_total", {"topic": cfg.topics.inference})
    assert d.processor.joined == N_REQ
    d.processor.refresh_gauges()
    assert not reg.get_sample_value("stopwise_join_expired_total", {"kind": "no_feedback"})
    assert not reg.get_sample_value("stopwise_join_expired_total", {"kind": "no_inference"})
    # the copies name where they came from: their CRC32 partition (so the CRC32 rule is librdkafka's)
    copies = [r for r in read_topic(cfg, cfg.topics.feedback) if any(h == "stopwise.rerouted" for h, _ in r.headers)]
    assert len(copies) == expected
    for r in copies:
        topic, part, _ = dict(r.headers)["stopwise.rerouted"].decode().rsplit("/", 2)
        assert topic == cfg.topics.feedback and int(part) == crc32_partition(r.key, 4) != r.partition
        assert r.partition == key_partition(r.key, 4)
    # the keyless record: in the DLQ as no_key (read_topic keeps keyed records only: look at the metric)
    wait_until(lambda: reg.get_sample_value("stopwise_rejected_total",
                                            {"topic": cfg.topics.feedback, "reason": "no_key"}) == 1, 30,
               what="the keyless record dead-lettered")
    assert d.dlq.count == 1
