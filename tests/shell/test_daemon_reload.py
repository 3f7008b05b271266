"""Done-when 4: SIGHUP applies a changed valid config, keeps the old one
(and keeps running) on an invalid config; SIGTERM checkpoints and exits 0."""

from __future__ import annotations

import signal
import time

from stopwise.daemon.records import decode_threshold

from daemon_helpers import (batch, labelled_total, latest_snapshots, learn_totals, producer_for, read_topic, send_events, wait_until,
                            write_config)


def _thresholds(cfg):
    return [decode_threshold(r.value) for r in read_topic(cfg, cfg.topics.thresholds)]


def test_sighup_reload_and_sigterm(make_config, daemon_process, tmp_path) -> None:
    sections = dict(logging={"format": "json"}, metrics={"enabled": False}, snapshot={"interval_s": 0.5})
    cfg = make_config(**sections)
    config_file = write_config(cfg, tmp_path / "stopwise.yaml")
    proc = daemon_process(config_file)
    wait_until(lambda: proc.events("daemon_ready") or not proc.alive(), 90, what="daemon ready")
    producer = producer_for(cfg)
    try:
        send_events(producer, cfg, batch("a", 90, 1))
        wait_until(lambda: {r.context for r in _thresholds(cfg)} >= {"task=extract|domain=general"}, 60,
                   step_s=0.3, what="first threshold publications")
        assert not any(r.reason == "kill_switch" for r in _thresholds(cfg))

        # 1. a valid change: the kill switch via config, and a slower publish interval
        write_config(cfg, config_file, guardrails={"kill_switch": True}, publish={"interval_s": 0.3})
        proc.signal(signal.SIGHUP)
        wait_until(lambda: proc.events("reloaded"), 30, what="reload applied")
        assert proc.events("reloaded")[-1]["publish_interval_s"] == 0.3
        wait_until(lambda: (recs := [r for r in _thresholds(cfg) if r.reason == "kill_switch"])
                   and all(r.threshold == 1.0 for r in recs), 30, step_s=0.3,
                   what="kill-switch thresholds after the reload")

        # 2. an invalid change: refused, old config kept, daemon keeps processing
        config_file.write_text(config_file.read_text() + "\nbudget: {em_drop: 7}\n")
        proc.signal(signal.SIGHUP)
        wait_until(lambda: proc.events("reload_refused"), 30, what="invalid reload refused")
        assert "budget" in proc.events("reload_refused")[-1]["error"]
        assert len(proc.events("reloaded")) == 1 and proc.alive()
        send_events(producer, cfg, batch("b", 60, 2))
        wait_until(lambda: labelled_total(latest_snapshots(cfg)) >= 150, 60, step_s=0.3,
                   what="events after the refused reload to be learned")
    finally:
        producer.close()

    # 3. SIGTERM: final checkpoint, exit 0
    term_at = time.time()
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert proc.events("final_checkpoint") and proc.events("daemon_stopped")
    snaps = latest_snapshots(cfg)
    assert snaps and all(s.created_at >= term_at for s in snaps.values()), "every shard snapshotted at shutdown"
    assert labelled_total(snaps) == 150 and learn_totals(snaps)[0] >= 150
