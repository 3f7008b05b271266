"""The real broker: produce/consume round trip, and compaction keeping only
the latest value per key (what the thresholds and state topics rely on)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, KafkaProducer

from stopwise.daemon.config import Config, parse_config

from daemon_helpers import read_topic


def _read_all(cfg: Config, topic: str, timeout_s: float = 20.0) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record of ``topic`` from the beginning up to its current end."""
    return [(r.key, r.value) for r in read_topic(cfg, topic, timeout_s)]


def test_produce_then_consume_with_a_group(make_config) -> None:
    cfg = make_config()
    topic = cfg.topics.inference
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all")
    sent = {f"r{i}".encode(): f'{{"i": {i}}}'.encode() for i in range(50)}
    for k, v in sent.items():
        producer.send(topic, key=k, value=v)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=cfg.kafka.bootstrap, group_id=cfg.kafka.group_id,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=cfg.kafka.session_timeout_ms)
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while len(got) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.update((r.key, r.value) for r in records)
        partitions = {tp.partition for tp in consumer.assignment()}
    finally:
        consumer.close()
    assert got == sent
    assert partitions == set(range(cfg.topics.input_partitions))  # keyed across every partition


def test_compacted_topic_keeps_only_latest_value_per_key(make_config) -> None:
    cfg = make_config()  # test topics: segment.ms=500, min.cleanable.dirty.ratio=0.01
    topic = cfg.topics.thresholds
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all", linger_ms=0)
    keys = [f"task=t{i}".encode() for i in range(5)]
    for version in range(4):
        for k in keys:
            producer.send(topic, key=k, value=f"{k.decode()} v{version}".encode())
    producer.flush(timeout=30)
    before = _read_all(cfg, topic)
    assert len([kv for kv in before if kv[0] in keys]) == 20  # all four versions are there first

    latest = {k: f"{k.decode()} v3".encode() for k in keys}
    deadline = time.monotonic() + 90
    rolls = 0
    while True:
        # segments roll on append once segment.ms passed: a filler record
        # closes the segment holding the values, so the cleaner may compact it
        producer.send(topic, key=b"__roll", value=str(rolls).encode())
        producer.flush(timeout=30)
        rolls += 1
        seen = [kv for kv in _read_all(cfg, topic) if kv[0] in keys]
        if len(seen) == len(keys):
            break
        assert time.monotonic() < deadline, f"not compacted after 90 s: {len(seen)} records for {len(keys)} keys"
        time.sleep(0.7)
    producer.close()
    assert dict(seen) == latest


# ------------------------------------------------------------------ the broker helper itself
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from stopwise.daemon.errors import BrokerError  # noqa: E402
from stopwise.daemon.kafka_broker import LocalBroker, _pid_alive  # noqa: E402


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BrokerError, match="`java` was not found on PATH.*openjdk"):
        LocalBroker(tmp_path / "w", cache_dir=tmp_path / "cache").start(timeout=5)


def test_missing_mvn_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BrokerError, match="`mvn` was not found on PATH.*maven"):
        LocalBroker(tmp_path / "w", cache_dir=tmp_path / "cache").fetch()


def test_ports_are_chosen_once_and_kept(tmp_path: Path) -> None:
    a = LocalBroker(tmp_path / "w")
    b = LocalBroker(tmp_path / "w")
    assert a.bootstrap == b.bootstrap and a.bootstrap.startswith("127.0.0.1:")
    assert not a.is_running()
    a.stop()  # stopping a broker that never ran is fine


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stopwise.daemon.kafka_broker", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ})


@pytest.mark.slow  # starts its own JVM twice: ~15 s idle, ~50 s on a loaded 2-core box
def test_cli_start_detaches_and_a_restart_keeps_port_and_data(tmp_path: Path) -> None:
    d = str(tmp_path / "b")
    started = _cli("start", "--dir", d)
    try:
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith("127.0.0.1:"), started.stdout  # only the address
        bootstrap = lines[0]
        pid = int((tmp_path / "b" / "broker.pid").read_text())
        assert _cli("status", "--dir", d).stdout.strip() == f"running {bootstrap}"

        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics({"smoke.restart": {"num_partitions": 1, "replication_factor": 1}},
                            wait_for_metadata=True)
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        producer.send("smoke.restart", key=b"k", value=b"kept across restart")
        producer.flush(timeout=30)
        producer.close()

        stopped = _cli("stop", "--dir", d)
        assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
        assert not _pid_alive(pid)  # no stray JVM
        assert _cli("status", "--dir", d).returncode == 1

        again = _cli("start", "--dir", d)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == bootstrap  # same port: clients reconnect
        assert _read_all(parse_config({"kafka": {"bootstrap": bootstrap}}), "smoke.restart", timeout_s=60) == [
            (b"k", b"kept across restart")]
    finally:
        _cli("stop", "--dir", d, timeout=60)
    assert not LocalBroker(Path(d)).is_running()
