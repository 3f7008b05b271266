"""Cost of the operations layer on the daemon's hot path, against baselines
measured in the same run:

- metrics: one labelled counter increment per record (``labels(...).inc()``
  and a pre-bound child) vs. incrementing a plain dict;
- logs: one structlog JSON line through the stdlib ProcessorFormatter pipeline
  (what the daemon writes) vs. one plain stdlib ``logging`` line;
- sd_notify: one ``WATCHDOG=1`` datagram (the main loop sends about one per s);
- lag: one LagMonitor measurement (end offsets + committed offsets of the
  input and examples topics) on a real broker, only with ``--bootstrap`` or
  ``$STOPWISE_BOOTSTRAP``.

    /tmp/venv/bin/python bench/bench_ops.py [--n 200000] [--repeat 5] [--bootstrap HOST:PORT] [--write]

Prints a markdown table; ``--write`` also writes bench/results/ops.md.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import structlog

from stopwise.daemon.logs import configure_logging
from stopwise.daemon.metrics import Metrics
from stopwise.daemon.sdnotify import Notifier

ROOT = Path(__file__).resolve().parents[1]


class NullIO(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def per_op(fn: Callable[[int], None], n: int, repeat: int) -> float:
    """Best-of-``repeat`` seconds per operation of ``fn(n)`` (which does n ops)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t)
    return best / n


def bench_metrics(n: int, repeat: int) -> list[tuple[str, float, float]]:
    m = Metrics()
    topics = ("stopwise.inference", "stopwise.feedback")
    plain: dict[str, int] = {}

    def baseline(k: int) -> None:
        for i in range(k):
            t = topics[i & 1]
            plain[t] = plain.get(t, 0) + 1

    def labelled(k: int) -> None:
        c = m.consumed
        for i in range(k):
            c.labels(topic=topics[i & 1]).inc()

    bound = [m.consumed.labels(topic=t) for t in topics]

    def prebound(k: int) -> None:
        for i in range(k):
            bound[i & 1].inc()

    base = per_op(baseline, n, repeat)
    return [("counter `labels(topic=...).inc()`", per_op(labelled, n, repeat), base),
            ("counter pre-bound child `.inc()`", per_op(prebound, n, repeat), base)]


def bench_logs(n: int, repeat: int) -> list[tuple[str, float, float]]:
    n = max(1, n // 10)
    sink = NullIO()
    root = logging.getLogger()
    # baseline: plain stdlib logging with a %-format
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    saved = list(root.handlers), root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    plain_logger = logging.getLogger("stopwise.bench")

    def stdlib(k: int) -> None:
        for i in range(k):
            plain_logger.info("threshold_published context=%s threshold=%s", "task=qa", 0.9)

    base = per_op(stdlib, n, repeat)
    configure_logging("json", "INFO", stream=sink)
    log = structlog.get_logger("stopwise.bench")
    kafka_log = logging.getLogger("kafka.conn")

    def ours(k: int) -> None:
        for i in range(k):
            log.info("threshold_published", context="task=qa", threshold=0.9)

    def kafka_lines(k: int) -> None:
        for i in range(k):
            kafka_log.warning("broker %s: reconnecting", 1)

    def filtered(k: int) -> None:
        for i in range(k):
            log.debug("per_record", n=i)

    rows = [("structlog JSON line", per_op(ours, n, repeat), base),
            ("kafka-python line via ProcessorFormatter (JSON)", per_op(kafka_lines, n, repeat), base),
            ("structlog debug call filtered out at INFO", per_op(filtered, n, repeat), base)]
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    return rows


def bench_notify(n: int, repeat: int) -> list[tuple[str, float, float]]:
    n = max(1, n // 20)
    path = Path(tempfile.gettempdir()) / f"sw-bench-{uuid.uuid4().hex[:8]}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    notifier = Notifier(str(path))

    def drain() -> None:
        try:
            while True:
                sock.recv(4096)
        except BlockingIOError:
            pass

    def send(k: int) -> None:
        for i in range(k):
            notifier.watchdog()
            if i % 8 == 7:
                drain()

    def baseline(k: int) -> None:  # one raw sendto on an open socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for i in range(k):
                s.sendto(b"WATCHDOG=1", str(path))
                if i % 8 == 7:
                    drain()

    try:
        return [("sd_notify `WATCHDOG=1` (new socket per message)", per_op(send, n, repeat),
                 per_op(baseline, n, repeat))]
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def bench_lag(bootstrap: str, repeat: int) -> list[tuple[str, float, float]]:
    from kafka import KafkaConsumer, TopicPartition

    from stopwise.daemon.config import Config, parse_config
    from stopwise.daemon.shell.kafka_io import client_kwargs
    from stopwise.daemon.shell.lag import LagMonitor
    from stopwise.daemon.shell.topics import admin_client, create_topics

    suffix = uuid.uuid4().hex[:8]
    cfg: Config = parse_config({
        "kafka": {"bootstrap": bootstrap, "group_id": f"gbench{suffix}", "client_id": f"cbench{suffix}"},
        "topics": {name: f"tbench{suffix}.{name}" for name in
                   ("inference", "feedback", "examples", "thresholds", "decisions", "state", "dlq")},
    })
    create_topics(cfg)
    try:
        monitor = LagMonitor(cfg, Metrics())
        monitor.measure()  # connect + metadata
        tps = [TopicPartition(cfg.topics.inference, p) for p in range(cfg.topics.input_partitions)]
        bare = KafkaConsumer(**client_kwargs(cfg), group_id=None)
        bare.end_offsets(tps)

        def lag(k: int) -> None:
            for _ in range(k):
                monitor.measure()

        def baseline(k: int) -> None:  # one end_offsets round trip for one topic
            for _ in range(k):
                bare.end_offsets(tps, timeout_ms=5000)

        rows = [(f"lag measurement ({len(monitor.snapshot())} partitions, real broker)",
                 per_op(lag, 20, repeat), per_op(baseline, 20, repeat))]
        bare.close()
        monitor.stop()
        return rows
    finally:
        admin = admin_client(cfg)
        try:
            admin.delete_topics([t for t in cfg.topics.model_dump().values() if isinstance(t, str)])
        finally:
            admin.close()


def fmt_time(s: float) -> str:
    return f"{s * 1e9:,.0f} ns" if s < 1e-6 else f"{s * 1e6:,.1f} µs" if s < 1e-3 else f"{s * 1e3:,.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--bootstrap", default=os.environ.get("STOPWISE_BOOTSTRAP", ""))
    ap.add_argument("--write", action="store_true", help="write bench/results/ops.md")
    args = ap.parse_args(argv)

    rows = bench_metrics(args.n, args.repeat) + bench_logs(args.n, args.repeat) + bench_notify(args.n, args.repeat)
    if args.bootstrap:
        rows += bench_lag(args.bootstrap, min(args.repeat, 3))
    lines = ["| operation | per op | baseline per op | ratio to baseline |", "|---|---:|---:|---:|"]
    baselines = {
        0: "dict increment", 1: "dict increment", 2: "stdlib logging line", 3: "stdlib logging line",
        4: "stdlib logging line", 5: "raw sendto on an open socket", 6: "end_offsets of one topic",
    }
    for i, (name, t, base) in enumerate(rows):
        lines.append(f"| {name} | {fmt_time(t)} | {fmt_time(base)} ({baselines.get(i, '')}) | {t / base:.2f}x |")
    table = "\n".join(lines)
    env = (f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores (shared), "
           f"n={args.n}, best of {args.repeat}")
    sys.stdout.write(f"{table}\n\n{env}\n")
    if args.write:
        cmd = "/tmp/venv/bin/python bench/bench_ops.py" + (f" --bootstrap {args.bootstrap}" if args.bootstrap else "")
        out = ROOT / "bench" / "results" / "ops.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"# Operations overhead\n\nCommand: `{cmd} --write`\n\n{table}\n\n{env}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
