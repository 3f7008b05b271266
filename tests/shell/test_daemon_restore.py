"""Restore: a forged snapshot is refused loudly and the shard is rebuilt from
the retained input (nothing lost, nothing counted twice); a valid snapshot
is restored and its positions are authoritative."""

from __future__ import annotations

import time

from stopwise.daemon.shell.snapshots import Snapshot

from daemon_helpers import batch, labelled_total, latest_snapshots, producer_for, send_events, wait_until


def test_forged_snapshot_is_refused_and_the_shard_rebuilt(make_config, daemon_thread, tmp_path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(b"the-real-key")
    cfg = make_config(security={"hmac_key_file": str(key_file)})
    producer = producer_for(cfg)
    try:
        send_events(producer, cfg, batch("f", 120, 4))
        first = daemon_thread(cfg)
        wait_until(lambda: first.daemon.processor.learned_labelled >= 120, 60, what="first run learns everything")
        assert first.stop() == 0
        assert labelled_total(latest_snapshots(cfg, b"the-real-key")) == 120
        # an attacker (or a bug) writes snapshots signed with another key, claiming the end of the input
        for name in ("learn/0", "learn/1", "join/0", "join/1"):
            forged = Snapshot(name, {}, b"not a pickle", time.time(), {"unique_examples": 10**6})
            producer.send(cfg.topics.state, key=name.encode(), value=forged.encode(b"attacker"))
        producer.flush(30)
        second = daemon_thread(cfg)
        assert second.daemon.snapshots_refused == 4
        # rebuilt from the retained input: the same 120 examples, once each
        wait_until(lambda: second.daemon.processor.learned_labelled >= 120, 60, what="rebuild from the input")
        time.sleep(1.0)
        assert second.stop() == 0
    finally:
        producer.close()
    assert second.daemon.processor.learned_labelled == 120
    assert labelled_total(latest_snapshots(cfg, b"the-real-key")) == 120


def test_restart_resumes_from_snapshot_positions(make_config, daemon_thread) -> None:
    cfg = make_config()
    producer = producer_for(cfg)
    try:
        send_events(producer, cfg, batch("a", 60, 5))
        first = daemon_thread(cfg)
        wait_until(lambda: first.daemon.processor.learned_labelled >= 60, 60, what="first batch learned")
        assert first.stop() == 0
        send_events(producer, cfg, batch("b", 45, 6))
        second = daemon_thread(cfg)
        wait_until(lambda: second.daemon.processor.learned_labelled >= 45, 60, what="second batch learned")
        time.sleep(1.0)
        assert second.stop() == 0
    finally:
        producer.close()
    # the restarted daemon consumed only what came after the snapshot
    assert second.daemon.processor.learned_labelled == 45 and second.daemon.processor.duplicates == 0
    assert labelled_total(latest_snapshots(cfg)) == 105
