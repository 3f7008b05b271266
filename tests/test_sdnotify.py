"""sd_notify over a real AF_UNIX datagram socket."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from stopwise.daemon.sdnotify import Notifier

from daemon_helpers import write_config


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:
        path = Path("/tmp") / f"sw-{uuid.uuid4().hex[:8]}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield str(path), sock
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_lifecycle_messages(notify_socket) -> None:
    path, sock = notify_socket
    n = Notifier(path, clock=lambda: 12.5)
    assert n.enabled
    n.ready("consuming 3 partitions")
    assert recv(sock) == {"READY": "1", "STATUS": "consuming 3 partitions"}
    n.ready()
    assert recv(sock) == {"READY": "1"}
    n.watchdog()
    assert recv(sock) == {"WATCHDOG": "1"}
    n.status("lag 12\nrecords")
    assert recv(sock) == {"STATUS": "lag 12 records"}
    n.reloading()
    assert recv(sock) == {"RELOADING": "1", "MONOTONIC_USEC": "12500000"}
    n.stopping()
    assert recv(sock) == {"STOPPING": "1"}
    assert n.notify(STATUS="x", EXTEND_TIMEOUT_USEC=5000000) is True
    assert recv(sock) == {"STATUS": "x", "EXTEND_TIMEOUT_USEC": "5000000"}


def test_reloading_uses_clock_monotonic_by_default(notify_socket) -> None:
    path, sock = notify_socket
    before = int(time_monotonic_us())
    Notifier(path).reloading()
    after = int(time_monotonic_us())
    usec = int(recv(sock)["MONOTONIC_USEC"])
    assert before <= usec <= after


def time_monotonic_us() -> float:
    import time

    return time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6


def test_abstract_namespace_socket() -> None:
    name = f"stopwise-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).notify(READY=1)
        assert sock.recv(4096) == b"READY=1"


def test_disabled_is_a_no_op() -> None:
    for path in (None, ""):
        n = Notifier(path)
        assert not n.enabled
        assert n.notify(READY=1) is False
        n.ready("x"), n.watchdog(), n.status("y"), n.stopping(), n.reloading()


def test_missing_socket_is_logged_once_not_raised(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.enabled
    with capture_logs() as logs:
        assert n.notify(WATCHDOG=1) is False
        assert n.notify(WATCHDOG=1) is False
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("sd_notify_failed", "warning"), ("sd_notify_failed", "debug")]
    assert "nobody-listens.sock" in logs[0]["socket"]


def test_a_full_queue_does_not_block_the_caller(notify_socket) -> None:
    path, sock = notify_socket  # nobody reads: the kernel queue fills up (net.unix.max_dgram_qlen)
    n = Notifier(path)
    n.send_timeout_s = 0.05
    t0 = time.monotonic()
    results = [n.notify(WATCHDOG=1) for _ in range(40)]
    assert time.monotonic() - t0 < 10
    assert results[0] is True and results[-1] is False
    assert recv(sock) == {"WATCHDOG": "1"}  # what was queued is intact


# ---- end to end: `stopwise run` as systemd would start it ---------------------------


class Collector:
    """Receives sd_notify datagrams in a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.messages = sock, []
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append(dict(line.split("=", 1) for line in data.split("\n") if "=" in line))

    def index(self, pred, start: int = 0) -> int | None:
        for i, msg in enumerate(list(self.messages)[start:], start):
            if pred(msg):
                return i
        return None

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)


def _wait(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


def _json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line must be JSON
    return out


def test_daemon_speaks_sd_notify_serves_metrics_and_logs_json(make_config, daemon_process, notify_socket,
                                                              tmp_path: Path) -> None:
    path, sock = notify_socket
    cfg = make_config(logging={"format": "json"}, metrics={"enabled": True, "port": 0})
    collector = Collector(sock)
    proc = daemon_process(write_config(cfg, tmp_path / "stopwise.yaml"),
                          env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    log_file = proc.log_file
    try:
        def running(value):
            assert proc.alive(), f"daemon exited with {proc.proc.returncode}: {log_file.read_text()[-2000:]}"
            return value

        ready = _wait(lambda: running(collector.index(lambda m: m.get("READY") == "1")), 120, "READY=1")
        _wait(lambda: running(collector.index(lambda m: m.get("WATCHDOG") == "1")), 30, "WATCHDOG=1")

        # metrics: the port the daemon picked is in its JSON log
        port = _wait(lambda: next((e["port"] for e in _json_lines(log_file) if e.get("event") == "metrics_serving"),
                                  None), 30, "metrics_serving log line")

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                return resp.read().decode()
        assert "stopwise_build_info{" in scrape()
        lag_line = f'stopwise_consumer_lag{{partition="0",topic="{cfg.topics.inference}"}} 0.0'
        _wait(lambda: lag_line in scrape() or None, 60, "consumer lag from the lag monitor")

        # SIGHUP with a valid file: RELOADING=1 + MONOTONIC_USEC, then READY=1
        before_hup = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
        proc.signal(signal.SIGHUP)
        reloading = _wait(lambda: collector.index(lambda m: m.get("RELOADING") == "1", ready + 1), 30, "RELOADING=1")
        assert int(collector.messages[reloading]["MONOTONIC_USEC"]) >= before_hup
        _wait(lambda: collector.index(lambda m: m.get("READY") == "1", reloading + 1), 30, "READY=1 after reload")

        # SIGTERM: STOPPING=1 and a clean exit
        proc.signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        assert collector.index(lambda m: m.get("STOPPING") == "1", reloading) is not None
    finally:
        proc.kill()
        collector.close()
    events = _json_lines(log_file)
    assert all({"event", "level", "timestamp", "logger"} <= set(e) for e in events)
    assert any(e["event"] == "reloaded" for e in events)
