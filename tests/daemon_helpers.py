"""Helpers for the tests that run the daemon against a real broker (tests/shell,
tests/e2e, tests/integration and the top-level tests): poll until a condition
holds, produce trace traffic, read topics and state snapshots, write a config
file, run a Daemon in a thread or `stopwise run` as a subprocess; and a fake
producer for the broker-less shell tests.

The fixtures built on these are ``daemon_process`` (tests/conftest.py) and
``daemon_thread`` (tests/shell/conftest.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pytest
import yaml
from kafka import KafkaProducer

from stopwise.daemon.config import Config
from stopwise.daemon.records import FeedbackEvent, InferenceEvent
from stopwise.daemon.shell.kafka_io import CompactedView, client_kwargs, make_reader
from stopwise.daemon.shell.snapshots import Snapshot
from stopwise.sim.traces import THREE_CONTEXTS, make_request, to_events


def wait_until(cond: Callable[[], Any], timeout_s: float = 60.0, step_s: float = 0.1,
               what: str | Callable[[], str] = "") -> Any:
    """Poll ``cond`` until truthy and return its value; fail the test on
    timeout, naming ``what`` (a callable is called then, to show late state)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {(what() if callable(what) else what) or cond}")
        time.sleep(step_s)


def producer_for(cfg: Config) -> KafkaProducer:
    return KafkaProducer(**client_kwargs(cfg), acks="all", linger_ms=5)


def send_events(producer: KafkaProducer, cfg: Config, events: Iterable[tuple[Any, Any]]) -> int:
    """Produce (inference, feedback) pairs keyed by request_id (either may be None)."""
    n = 0
    for inf, fb in events:
        if inf is not None:
            producer.send(cfg.topics.inference, key=inf.request_id.encode(), value=inf.to_bytes())
        if fb is not None:
            producer.send(cfg.topics.feedback, key=fb.request_id.encode(), value=fb.to_bytes())
        n += 1
    producer.flush(timeout=60)
    return n


def batch(prefix: str, n: int, seed: int) -> list[tuple[InferenceEvent, FeedbackEvent]]:
    """``n`` requests ``{prefix}{i}`` cycling over THREE_CONTEXTS, stamped now,
    as (inference, feedback) pairs under threshold 1.0 and explore rate 0.2."""
    rng = random.Random(seed)
    now = time.time()
    return [to_events(make_request(rng, THREE_CONTEXTS[i % 3], f"{prefix}{i}", now), 1.0, 0.2) for i in range(n)]


def read_topic(cfg: Config, topic: str, timeout_s: float = 30.0) -> list:
    """Every keyed record currently in ``topic`` (all partitions, in offset
    order per partition), read to its end within ``timeout_s``."""
    out: list = []
    view = CompactedView(topic, make_reader(cfg), timeout_s=timeout_s)
    try:
        view.catch_up(on_record=out.append)
    finally:
        view.close()
    return out


def latest_snapshots(cfg: Config, key: bytes | None = None) -> dict[str, Snapshot]:
    view = CompactedView(cfg.topics.state, make_reader(cfg))
    try:
        view.catch_up()
    finally:
        view.close()
    return {k.decode(): Snapshot.decode(v, key) for k, v in view.latest.items()
            if k.startswith((b"join/", b"learn/"))}


def learn_totals(snaps: dict[str, Snapshot]) -> tuple[int, float]:
    """(sum of unique_examples, sum of learned) over the learn shards' snapshot headers."""
    learn = [s for name, s in snaps.items() if name.startswith("learn/")]
    return sum(int(s.meta["unique_examples"]) for s in learn), sum(float(s.meta["learned"]) for s in learn)


def labelled_total(snaps: dict[str, Snapshot]) -> int:
    """Sum of the labelled examples learned over the learn shards' snapshot headers."""
    return sum(int(s.meta.get("labelled", 0)) for name, s in snaps.items() if name.startswith("learn/"))


def write_config(cfg: Config, path: Path, **changes: dict) -> Path:
    """``cfg`` as a YAML config file at ``path``, ``changes`` merged per section."""
    data = json.loads(cfg.model_dump_json())
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path


class DaemonThread:
    """A Daemon running in a thread of the test process."""

    def __init__(self, cfg: Config, **kwargs: Any) -> None:
        from stopwise.daemon.shell.runner import Daemon

        kwargs.setdefault("lag_monitor", False)
        self.daemon = Daemon(cfg, **kwargs)
        self.stop_event = threading.Event()
        self.rc: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)

    def _run(self) -> None:
        try:
            self.rc = self.daemon.run(self.stop_event)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            raise

    def start(self, ready_timeout_s: float = 60.0) -> "DaemonThread":
        self.thread.start()
        wait_until(lambda: self.daemon.assigned_once.is_set() or self.error, ready_timeout_s, what="assignment")
        if self.error:
            raise self.error
        return self

    def stop(self, timeout_s: float = 60.0) -> int | None:
        self.stop_event.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "daemon thread did not stop"
        if self.error:
            raise self.error
        return self.rc


class DaemonProcess:
    """``stopwise run --config FILE`` in a subprocess, stdout and stderr to a
    log file. Its environment is the test process's without systemd's
    variables, plus ``env``."""

    def __init__(self, config_file: Path, log_file: Path, env: Mapping[str, str] | None = None) -> None:
        self.config_file, self.log_file = config_file, log_file
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def start(self) -> "DaemonProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "INVOCATION_ID", "JOURNAL_STREAM"))}
        env.update(self.env)
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "stopwise.daemon.cli", "run", "--config", str(self.config_file)],
                                     stdout=self._log, stderr=self._log, env=env)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout_s)
        self._log.close()
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def events(self, name: str) -> list[dict]:
        return [e for e in self.logs() if e.get("event") == name]

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


class FakeProducer:
    """Stands in for a KafkaProducer: records what is sent; futures fail for
    topics in ``failing`` (as after the client's retries)."""

    def __init__(self, failing=()) -> None:
        self.failing, self.sent, self.headers, self.flushes = set(failing), [], [], 0

    def send(self, topic, value=None, key=None, headers=None, partition=None):
        from kafka.future import Future

        self.sent.append((topic, key, value))
        self.headers.append(headers)
        fut = Future()
        if topic in self.failing:
            fut.failure(RuntimeError(f"cannot deliver to {topic}"))
        else:
            fut.success(None)
        return fut

    def flush(self, timeout=None):
        self.flushes += 1

    def close(self, timeout=None):
        pass
