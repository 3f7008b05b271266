"""Done-when 5: thresholds are signed when a key file is configured; versions
only grow per context, across restarts and kill-switch writes too."""

from __future__ import annotations

import json
from collections import defaultdict

import subprocess
import sys

from stopwise.daemon.records import ThresholdRecord, decode_threshold
from stopwise.daemon.shell.publisher import signed_record_dict
from stopwise.daemon.signing import verify_record

from daemon_helpers import batch, producer_for, read_topic, send_events, wait_until, write_config

CONTEXTS = {"task=extract|domain=general", "task=qa|domain=finance", "task=math|domain=science"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess (as an operator runs it)."""
    return subprocess.run([sys.executable, "-m", "stopwise.daemon.cli", *args], capture_output=True, text=True,
                          timeout=120)


def _records(cfg):
    return [(json.loads(r.value), decode_threshold(r.value)) for r in read_topic(cfg, cfg.topics.thresholds)]


def _assert_signed_and_growing(cfg, key: bytes) -> dict[str, list[int]]:
    """Versions per context from the audit topic (cleanup=delete, so the whole
    history is there; the thresholds topic is compacted), each signature
    checked; the latest record per context on the thresholds topic verifies too."""
    versions: dict[str, list[int]] = defaultdict(list)
    for r in read_topic(cfg, cfg.topics.decisions):
        audit = json.loads(r.value)
        body = {k: v for k, v in audit.items() if k != "previous_threshold"}
        assert verify_record(body, key), audit
        versions[audit["context"]].append(audit["version"])
    for ctx, vs in versions.items():
        assert vs == sorted(vs) and len(set(vs)) == len(vs), (ctx, vs)
    for raw, _ in _records(cfg):
        assert verify_record(raw, key), raw
    return versions


def test_signed_thresholds_and_versions_grow_across_restarts(make_config, daemon_thread, tmp_path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(b"s3cret-key\n")
    cfg = make_config(security={"hmac_key_file": str(key_file)})
    key = cfg.security.hmac_key()
    producer = producer_for(cfg)
    try:
        # a previous incarnation published version 100 for one context
        old = ThresholdRecord(context="task=qa|domain=finance", threshold=1.0, explore_rate=0.2, version=100,
                              issued_at=1.0, expires_at=2.0, policy="reference")
        producer.send(cfg.topics.thresholds, key=old.context.encode(),
                      value=json.dumps(signed_record_dict(old, 100, key)).encode())
        producer.flush(30)
        first = daemon_thread(cfg)
        send_events(producer, cfg, batch("a", 60, 1))
        wait_until(lambda: {r.context for _, r in _records(cfg) if r.issued_at > 2.0} >= CONTEXTS, 60,
                   step_s=0.3, what="first publications")
        assert first.stop() == 0
        v1 = _assert_signed_and_growing(cfg, key)
        assert v1["task=qa|domain=finance"][0] > 100  # above what the previous incarnation published

        # restart (state restored), then the kill switch makes every context publish again
        second = daemon_thread(cfg)
        cfg_file = write_config(cfg, tmp_path / "stopwise.yaml")
        n_contexts = len({r.context for _, r in _records(cfg)})
        out = _cli("kill-switch", "on", "--config", str(cfg_file))
        assert out.returncode == 0, out.stderr
        wait_until(lambda: second.daemon.kill_switch, 30, what="daemon applies the control record")
        # the command's own records (one per known context) and then the daemon's, in the audit log
        wait_until(lambda: sum(1 for r in read_topic(cfg, cfg.topics.decisions)
                               if json.loads(r.value)["reason"] == "kill_switch") >= n_contexts + 3,
                   30, step_s=0.3, what="daemon kill-switch publications")
        assert second.stop() == 0
    finally:
        producer.close()
    v2 = _assert_signed_and_growing(cfg, key)
    for ctx in CONTEXTS:
        assert len(v2[ctx]) >= len(v1[ctx]) + 2  # the CLI's record and the daemon's
    latest = {r.context: r for _, r in _records(cfg)}
    assert all(latest[c].threshold == 1.0 for c in CONTEXTS)


def test_kill_switch_cli_works_while_the_daemon_is_down(make_config, daemon_thread, tmp_path) -> None:
    cfg = make_config()
    producer = producer_for(cfg)
    try:
        d = daemon_thread(cfg)
        send_events(producer, cfg, batch("k", 75, 2))  # >= min_support (20) per context
        wait_until(lambda: {r.context for _, r in _records(cfg)} >= CONTEXTS, 60, step_s=0.3, what="publications")
        assert d.stop() == 0
    finally:
        producer.close()
    before = {r.context: r.version for _, r in _records(cfg)}
    cfg_file = write_config(cfg, tmp_path / "stopwise.yaml")
    out = _cli("kill-switch", "on", "--config", str(cfg_file))
    assert out.returncode == 0, out.stderr
    assert "3 context(s)" in out.stdout or "4 context(s)" in out.stdout, out.stdout
    latest = {r.context: r for _, r in _records(cfg)}
    for ctx, v in before.items():
        assert latest[ctx].threshold == 1.0 and latest[ctx].version == v + 1 and latest[ctx].reason == "kill_switch"
    # a daemon started afterwards applies the switch at start
    d2 = daemon_thread(cfg)
    assert d2.daemon.kill_switch
    out = _cli("kill-switch", "off", "--config", str(cfg_file))
    assert out.returncode == 0, out.stderr
    wait_until(lambda: not d2.daemon.kill_switch, 30, what="switch off applied")
    assert d2.stop() == 0
