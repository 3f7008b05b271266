"""``stopwise tail``, ``stopwise publish`` and ``stopwise inferencer`` on a real broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from stopwise.daemon.cli import app
from stopwise.daemon.signing import sign_record

import daemon_helpers
from clients_helpers import produce

runner = CliRunner()


def write_config(cfg, tmp_path: Path, key: bytes | None = None) -> Path:
    """The config file; with ``key``, written to an HMAC key file it names."""
    changes = {}
    if key:
        kf = tmp_path / "hmac.key"
        kf.write_bytes(key)
        changes["security"] = {"hmac_key_file": str(kf)}
    return daemon_helpers.write_config(cfg, tmp_path / "stopwise.yaml", **changes)


def threshold(context: str, thr: float, version: int = 1, key: bytes | None = None, **extra) -> bytes:
    body = {"v": 1, "context": context, "threshold": thr, "explore_rate": 0.05, "version": version,
            "issued_at": time.time() - 5, "expires_at": time.time() + 3600, "policy": "reference",
            "est_loss": 0.004, "est_loss_ucb": 0.009, "est_savings": 0.42, "n": 321.0, "reason": "ltt", **extra}
    return json.dumps(sign_record(body, key) if key else body).encode()


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out: list = []
    end = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < end:
        for recs in c.poll(timeout_ms=300).values():
            out.extend(recs)
    time.sleep(0.5)
    for recs in c.poll(timeout_ms=300).values():  # nothing extra may be there
        out.extend(recs)
    c.close()
    return out


def test_tail_table_json_and_filter(make_config, tmp_path):
    key = b"k1"
    cfg = make_config()
    conf = write_config(cfg, tmp_path, key)
    produce(cfg.kafka.bootstrap, cfg.topics.thresholds, [
        ("task=qa", threshold("task=qa", 0.9, key=key)),
        ("task=qa|domain=fin", threshold("task=qa|domain=fin", 0.8, version=3, key=key)),
        ("task=img", threshold("task=img", 0.7, key=key)),
        ("task=img", threshold("task=img", 0.1, version=9, key=b"forged")),
    ])
    res = runner.invoke(app, ["tail", "--config", str(conf), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["context"] for r in rows] == ["task=img", "task=qa", "task=qa|domain=fin"]
    img = rows[0]
    assert img["threshold"] == 0.7 and img["version"] == 1            # forged v9 ignored
    fin = rows[2]
    assert fin["version"] == 3 and fin["est_loss_ucb"] == 0.009 and fin["n"] == 321.0 and 4 <= fin["age_s"] < 60

    res = runner.invoke(app, ["tail", "--config", str(conf), "--json", "--context", "fin"])
    assert [json.loads(x)["context"] for x in res.stdout.strip().splitlines()] == ["task=qa|domain=fin"]

    res = runner.invoke(app, ["tail", "--config", str(conf)], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "task=qa|domain=fin" in res.stdout and "1 rejected" in res.stdout and "0.800" in res.stdout


def test_tail_follow_json_sees_new_versions(make_config, tmp_path):
    import threading

    cfg = make_config()
    conf = write_config(cfg, tmp_path)
    produce(cfg.kafka.bootstrap, cfg.topics.thresholds, [("task=qa", threshold("task=qa", 0.9))])
    later = threading.Timer(3.0, produce, args=(cfg.kafka.bootstrap, cfg.topics.thresholds,
                                                [("task=qa", threshold("task=qa", 0.85, version=2))]))
    later.start()
    res = runner.invoke(app, ["tail", "--config", str(conf), "--json", "--follow", "--duration", "8",
                              "--interval", "0.2"])
    later.join()
    assert res.exit_code == 0, res.output
    versions = [json.loads(x)["version"] for x in res.stdout.strip().splitlines()]
    assert versions == [1, 2]


def test_tail_reports_unreachable_topic(tmp_path):
    from stopwise.daemon.config import parse_config

    cfg = parse_config({"kafka": {"bootstrap": "127.0.0.1:9"}, "security": {"allow_unsigned": True}})
    conf = write_config(cfg, tmp_path)
    res = runner.invoke(app, ["tail", "--config", str(conf), "--wait", "1"])
    assert res.exit_code == 1 and "could not read topic" in res.output


def test_tail_without_a_key_or_allow_unsigned_is_refused(tmp_path):
    from stopwise.daemon.config import parse_config

    conf = write_config(parse_config({"kafka": {"bootstrap": "127.0.0.1:9"}}), tmp_path)
    res = runner.invoke(app, ["tail", "--config", str(conf), "--wait", "1"])
    assert res.exit_code == 2 and "security.hmac_key_file: a signing key file is required" in res.output


def test_publish_reports_rejected_lines_and_sends_valid_ones(make_config, tmp_path):
    cfg = make_config()
    conf = write_config(cfg, tmp_path)
    good = [{"request_id": f"r{i}", "ts": 1.0, "em": i % 2} for i in range(5)]
    lines = [json.dumps(g) for g in good[:3]] + ["", "{not json", json.dumps({"request_id": "x", "ts": 1.0}),
                                                 json.dumps({"v": 2, "request_id": "y", "ts": 1.0, "em": 1})]
    lines += [json.dumps(g) for g in good[3:]]
    src = tmp_path / "fb.jsonl"
    src.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["publish", "--config", str(conf), "--kind", "feedback", str(src)])
    assert res.exit_code == 1
    out = res.output
    assert "line 5: rejected: bad_json" in out
    assert "line 6: rejected: missing_field" in out
    assert "line 7: rejected: unknown_version" in out
    assert "sent 5, rejected 3, undelivered 0" in out
    recs = consume_all(cfg.kafka.bootstrap, cfg.topics.feedback, 5)
    assert sorted(r.key.decode() for r in recs) == [f"r{i}" for i in range(5)]


def test_publish_stdin_all_valid_exits_zero(make_config, tmp_path):
    cfg = make_config()
    conf = write_config(cfg, tmp_path)
    ev = {"request_id": "q1", "ts": 1.0, "context": {"task": "qa"}, "threshold": 0.9, "stop_index": 0,
          "tokens_used": 10, "tokens_budget": 40, "checkpoints": [[10, 0.95, "a"]]}
    res = runner.invoke(app, ["publish", "--config", str(conf), "-"], input=json.dumps(ev) + "\n")
    assert res.exit_code == 0, res.output
    assert "inference: sent 1, rejected 0" in res.output
    recs = consume_all(cfg.kafka.bootstrap, cfg.topics.inference, 1)
    assert [r.key for r in recs] == [b"q1"]


def test_publish_missing_file(tmp_path):
    from stopwise.daemon.config import parse_config

    conf = write_config(parse_config({}), tmp_path)
    res = runner.invoke(app, ["publish", "--config", str(conf), str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "cannot read" in res.output


def test_inferencer_command_runs_fleet_and_writes_stats(make_config, tmp_path):
    cfg = make_config()
    conf = write_config(cfg, tmp_path)
    produce(cfg.kafka.bootstrap, cfg.topics.thresholds,
            [("task=digits", threshold("task=digits", 0.8)), ("*", threshold("*", 0.9))])
    stats = tmp_path / "fleet.json"
    res = runner.invoke(app, ["inferencer", "--config", str(conf), "--workers", "2", "--rate", "80",
                              "--duration", "4", "--feedback-delay", "0.1", "--stats-file", str(stats),
                              "--progress", "0"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    data = json.loads(stats.read_text())
    summary = data["summary"]
    assert summary["all"]["requests"] >= 100
    assert summary["task=digits|domain=clean"]["last_threshold"] == 0.8
    assert summary["task=hard|domain=noisy"]["last_threshold"] == 0.9
    assert summary["all"]["token_ratio"] < 1.0 and data["errors"] == 0 and data["undelivered"] == 0
    assert "inferencer fleet" in res.stdout
    n = summary["all"]["requests"]
    recs = consume_all(cfg.kafka.bootstrap, cfg.topics.inference, n)
    assert len(recs) == n
