"""Issue 13, secure by default, on the real broker: forged state cannot run
code (reproduction 6), unsigned control records are ignored when a key is
configured (6), the version floor believes only verified records below the
int64 ceiling (7), and a SIGHUP cannot drop signing (5)."""

from __future__ import annotations

import json
import pickle
import time
import zlib

from stopwise.daemon.records import MAX_VERSION, ThresholdRecord, decode_threshold
from stopwise.daemon.shell.control import KILL_SWITCH_KEY, control_record
from stopwise.daemon.shell.publisher import signed_record_dict
from stopwise.daemon.shell.snapshots import Snapshot
from stopwise.daemon.signing import verify_record

from daemon_helpers import (batch, labelled_total, latest_snapshots, learn_totals, producer_for, read_topic, send_events, wait_until,
                            write_config)

CONTEXTS = {"task=extract|domain=general", "task=qa|domain=finance", "task=math|domain=science"}
QA = "task=qa|domain=finance"


class _Bomb:
    """What a hostile producer pickles: unpickling it runs a shell command."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        import os

        return (os.system, (self.cmd,))


def _pickled_snapshot(shard: str, cmd: str) -> bytes:
    """A format-1 snapshot as the old daemon wrote it (unsigned tag ``-``), state = a pickle bomb."""
    header = {"format": 1, "shard": shard, "positions": {}, "created_at": time.time(), "meta": {}}
    blob = json.dumps(header).encode() + b"\n" + zlib.compress(pickle.dumps(_Bomb(cmd)))
    return b"-\n" + blob


def _threshold(context: str, version: int, key: bytes | None) -> bytes:
    rec = ThresholdRecord(context=context, threshold=0.5, explore_rate=0.0, version=1, issued_at=1.0,
                          expires_at=4e9, policy="forged")
    body = signed_record_dict(rec, version, key)
    if key is None:
        body["sig"] = None
    return json.dumps(body).encode()


def _published(cfg) -> list[dict]:
    return [json.loads(r.value) for r in read_topic(cfg, cfg.topics.decisions)]


def test_forged_state_cannot_run_code_and_forged_versions_are_not_believed(make_config, daemon_thread,
                                                                            tmp_path) -> None:
    """Unsigned (allow_unsigned: true), the worst case: a pickled state record
    ran a shell command; a forged version 2^63 made the daemon publish beyond int64."""
    cfg = make_config(security={"allow_unsigned": True})
    marker = tmp_path / "pwned"
    producer = producer_for(cfg)
    try:
        send_events(producer, cfg, batch("s", 60, 3))
        forged = {
            "join/0": _pickled_snapshot("join/0", f"touch {marker}"),
            "learn/0": _pickled_snapshot("learn/0", f"touch {marker}"),
            "join/1": Snapshot("join/1", {}, b'{"format":"stopwise-state","version":2,'
                                              b'"root":{"$o":["os","system",{}]}}', time.time()).encode(None),
            "learn/1": Snapshot("learn/1", {}, b'{"format":"stopwise-state","version":2,"root":{"$o":'
                                               b'["stopwise.daemon.core.join","Joiner",{}]}}', time.time()).encode(None),
        }
        for name, value in forged.items():
            producer.send(cfg.topics.state, key=name.encode(), value=value)
        producer.send(cfg.topics.thresholds, key=QA.encode(), value=_threshold(QA, 2**63, None))
        producer.send(cfg.topics.thresholds, key=QA.encode(), value=_threshold(QA, MAX_VERSION, None))
        producer.flush(30)
        d = daemon_thread(cfg)
        assert d.daemon.snapshots_refused == 4
        assert not marker.exists(), "a forged state record ran code"
        assert d.daemon.publisher.ignored == 2
        wait_until(lambda: d.daemon.processor.learned >= 60, 60, what="shards rebuilt from the input")
        wait_until(lambda: {a["context"] for a in _published(cfg)} >= CONTEXTS, 60, step_s=0.3,
                   what="publications")
        time.sleep(0.5)
        assert d.stop() == 0
    finally:
        producer.close()
    audit = _published(cfg)
    assert all(a["sig"] == "unsigned" for a in audit)  # every record says it is unsigned
    assert all(1 <= a["version"] < 2**32 for a in audit), sorted(a["version"] for a in audit)[-3:]
    snaps = latest_snapshots(cfg)
    unique, learned = learn_totals(snaps)
    # rebuilt from the input: every request's label learned once, nothing twice
    assert labelled_total(snaps) == 60 and unique == learned == d.daemon.processor.learned
    assert d.daemon.processor.duplicates == 0
    assert not marker.exists()


def test_with_a_key_unsigned_control_and_threshold_records_are_ignored_and_sighup_keeps_signing(
        make_config, daemon_thread, tmp_path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_text("the-real-key\n")
    cfg = make_config(security={"hmac_key_file": str(key_file), "allow_unsigned": False})
    key = cfg.security.hmac_key()
    cfg_file = write_config(cfg, tmp_path / "stopwise.yaml")
    producer = producer_for(cfg)
    try:
        # an unsigned kill switch, and forged/unsigned threshold records with huge versions
        producer.send(cfg.topics.state, key=KILL_SWITCH_KEY, value=json.dumps(control_record(True, 1.0, None)).encode())
        producer.send(cfg.topics.thresholds, key=QA.encode(), value=_threshold(QA, 10**6, b"attacker"))
        producer.send(cfg.topics.thresholds, key=QA.encode(), value=_threshold(QA, 2**62, None))
        producer.flush(30)
        d = daemon_thread(cfg, config_path=cfg_file)
        assert not d.daemon.kill_switch and d.daemon.control_refused == 1
        assert d.daemon.publisher.ignored == 2
        send_events(producer, cfg, batch("k", 60, 4))
        wait_until(lambda: {a["context"] for a in _published(cfg)} >= CONTEXTS, 60, step_s=0.3,
                   what="publications")

        # SIGHUP with the key file emptied: refused, the old key kept
        key_file.write_text("  \n")
        d.daemon.request_reload()
        wait_until(lambda: d.daemon.metrics.reloads.labels(result="rejected")._value.get() == 1, 30,
                   what="reload refused")
        # ... and a reload to an explicitly unsigned config is refused as well
        write_config(cfg, cfg_file, security={"hmac_key_file": None, "allow_unsigned": True})
        d.daemon.request_reload()
        wait_until(lambda: d.daemon.metrics.reloads.labels(result="rejected")._value.get() == 2, 30,
                   what="second reload refused")
        assert d.daemon.publisher.key == key and d.daemon.cfg.security.hmac_key() == key
        send_events(producer, cfg, batch("m", 60, 5))
        d.daemon.request_stop()  # the final checkpoint and tick
        wait_until(lambda: not d.thread.is_alive(), 60, what="daemon stopped")
        assert d.stop() == 0
    finally:
        producer.close()
    audit = _published(cfg)
    for a in audit:
        body = {k: v for k, v in a.items() if k != "previous_threshold"}
        assert verify_record(body, key), a  # signed before and after the refused reloads
    assert max(a["version"] for a in audit if a["context"] == QA) < 1000
    latest = {r.key: json.loads(r.value) for r in read_topic(cfg, cfg.topics.thresholds)}
    assert verify_record(latest[QA.encode()], key) and decode_threshold(json.dumps(latest[QA.encode()])).policy != "forged"
    assert not d.daemon.kill_switch
