"""Done-when: with the broker stopped the fleet keeps serving from the last
good table and the publisher drops instead of blocking; after a restart the
table reconnects and the publisher delivers again. Uses its OWN broker."""

from __future__ import annotations

import json
import time

from stopwise.clients.inferencer import Fleet, publisher_from_config, table_from_config
from stopwise.daemon.config import parse_config
from stopwise.daemon.shell.topics import create_topics

from clients_helpers import produce, wait_for

CONTEXTS = {"task=digits|domain=clean": 0.8, "task=digits|domain=noisy": 0.9,
            "task=hard|domain=clean": 0.85, "task=hard|domain=noisy": 0.95}


def threshold_records(version: int, shift: float = 0.0) -> list[tuple[str, bytes]]:
    out = []
    for key, thr in CONTEXTS.items():
        body = {"v": 1, "context": key, "threshold": round(thr - shift, 3), "explore_rate": 0.0, "version": version,
                "issued_at": time.time(), "expires_at": time.time() + 3600, "policy": "test"}
        out.append((key, json.dumps(body).encode()))
    return out


def test_broker_outage_fleet_keeps_serving_and_publisher_drops(broker_factory):
    broker = broker_factory()
    bootstrap = broker.start(timeout=180)
    cfg = parse_config({"kafka": {"bootstrap": bootstrap}, "topics": {"input_partitions": 1},
                        "security": {"allow_unsigned": True}})
    create_topics(cfg)
    produce(bootstrap, cfg.topics.thresholds, threshold_records(1), flush_timeout=60)

    table = table_from_config(cfg, retry_backoff_s=(0.2, 1.0))
    pub = publisher_from_config(cfg, queue_size=200, max_inflight=200, log_interval_s=1.0)
    fleet = Fleet(cfg, workers=2, rate=100.0, table=table, publisher=pub, feedback_delay=0.2)
    table.start()
    fleet.start()
    try:
        assert table.wait_ready(60)
        assert wait_for(lambda: table.get("task=digits|domain=noisy") is not None, 30)
        assert wait_for(lambda: pub.sent > 100, 30)
        served_up = fleet.served

        broker.stop()
        t_down = time.monotonic()
        # calls stay fast while the broker is gone
        worst = 0.0
        for i in range(300):
            t = time.perf_counter()
            pub.feedback(request_id=f"outage-{i}", ts=time.time(), em=1)
            worst = max(worst, time.perf_counter() - t)
            time.sleep(0.002)
        assert worst < 0.05, f"publisher call blocked {worst * 1e3:.1f} ms with the broker down"
        assert wait_for(lambda: pub.dropped > 0, 30), "publisher never dropped with the broker down"
        # the fleet keeps serving from the last good table
        served_down = fleet.served
        assert wait_for(lambda: fleet.served > served_down + 200, 30)
        assert fleet.errors == 0
        for key, thr in CONTEXTS.items():
            assert table.get(key).threshold == thr
        d = table.decide("req-x", {"task": "hard", "domain": "noisy"})
        assert d.threshold == 0.95 and d.version == 1
        assert time.monotonic() - t_down > 2.0
        assert pub.queued <= 200

        # restart: the same workdir keeps ports and data; the table reconnects
        sent_before = pub.sent
        broker.start(timeout=180)
        produce(bootstrap, cfg.topics.thresholds, threshold_records(2, shift=0.05), flush_timeout=60)
        assert wait_for(lambda: table.get("task=hard|domain=noisy").version == 2, 90), "table did not reconnect"
        assert table.get("task=hard|domain=noisy").threshold == 0.9
        assert wait_for(lambda: pub.sent > sent_before + 50, 90), "publisher did not deliver after restart"
    finally:
        fleet.stop(flush_timeout=5.0)
        table.stop()
        pub.close(5.0)
    assert served_up > 0 and fleet.errors == 0
