"""The daemon through the real broker: throughput vs a bare consumer, and
feedback-to-published-threshold latency at a steady load.

Throughput (same run, same pre-filled input topics):

* baseline: a bare kafka-python consumer (no group, assign + seek to the
  beginning) reading every record of the inference and feedback topics;
* reference: the same bare consumer also decoding/validating every record
  (``decode_inference``/``decode_feedback``), to separate the decode cost;
* daemon (input): the in-process Daemon consuming and processing the same
  records (decode, join, produce the labelled examples), from its
  assignment to the last input record consumed;
* daemon (end to end): the same, until every labelled example has also been
  consumed back from the examples topic and learned by the Controller;
* ``stopwise run`` x N: N real daemon processes (``--instances``, e.g. 1
  and 2) in one consumer group over the same input, each with its metrics
  endpoint. The first instance to join starts alone (Kafka assigns it
  everything until the others' join completes, which takes up to a
  heartbeat interval); the window starts when EVERY instance has logged
  ``daemon_ready`` and ends when the scraped
  ``stopwise_examples_learned_total`` of all instances reaches the number of
  requests; rate = 2 x (examples learned in the window) / window.

Every reader runs ``--rounds`` times, interleaved (bare, decode, daemon,
processes, bare, ...), with the garbage-collector settings of ``stopwise
run`` (``tune_gc``) for all of them; a round's baseline is the median of
three bare reads. The table gives the median rate and the median of the
per-round ratios to the same round's baseline.

Latency: background traffic of the three contexts at ``--rate`` requests/s;
every ``1/--probe-rate`` s a probe request of a NEVER-SEEN context
(``task=probe|domain=p<i>``, min_support 0) is produced, inference first,
then its feedback. Latency = time from producing the probe's feedback to
the moment a tailing consumer of the thresholds topic sees the first record
for that context (the join, the examples hop, learning, the next tick and
publication, and the fetch). Publish interval ``--interval`` s.

    /tmp/venv/bin/python bench/bench_daemon.py                # uses $STOPWISE_BOOTSTRAP or starts a LocalBroker
    /tmp/venv/bin/python bench/bench_daemon.py --n 40000 --rounds 3 --instances 1,2 --latency-s 30 --out bench/results/daemon_table.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stopwise.daemon.config import Config, parse_config
from stopwise.daemon.kafka_broker import free_port
from stopwise.daemon.records import FeedbackEvent, InferenceEvent, decode_feedback, decode_inference
from stopwise.daemon.shell.kafka_io import client_kwargs
from stopwise.daemon.shell.runner import Daemon, tune_gc
from stopwise.daemon.shell.topics import create_topics
from stopwise.sim.traces import ContextProfile, make_request, to_events

from _traffic import served_events


def make_cfg(bootstrap: str, **sections) -> Config:
    s = uuid.uuid4().hex[:8]
    base = {
        "kafka": {"bootstrap": bootstrap, "group_id": f"bench{s}", "client_id": f"bench{s}",
                  "max_poll_records": 2000, "poll_timeout_ms": 100},
        "topics": {**{n: f"bench{s}.{n}" for n in ("inference", "feedback", "examples", "thresholds", "decisions",
                                                    "state", "dlq")}, "input_partitions": 2, "examples_partitions": 2},
        "snapshot": {"interval_s": 30.0}, "metrics": {"enabled": False},
        "security": {"allow_unsigned": True},  # unsigned on purpose, as the numbers in BENCHMARKS.md were measured
    }
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    cfg = parse_config(base, file="<bench>")
    create_topics(cfg)
    return cfg


def send(prod: KafkaProducer, topic: str, event: InferenceEvent | FeedbackEvent) -> None:
    """Produce one event as the publisher does: keyed by its request_id."""
    prod.send(topic, key=event.request_id.encode(), value=event.to_bytes())


def prefill(cfg: Config, n: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    prod = KafkaProducer(**client_kwargs(cfg), acks=1, linger_ms=20, batch_size=512 * 1024)
    now = time.time()
    for i in range(n):
        inf, fb = served_events(rng, i, "b", now)
        send(prod, cfg.topics.inference, inf)
        send(prod, cfg.topics.feedback, fb)
    prod.flush(120)
    prod.close()
    return 2 * n


def bare_consumer(cfg: Config, total: int, decode: bool = False) -> float:
    c = KafkaConsumer(**client_kwargs(cfg), group_id=None, enable_auto_commit=False, max_poll_records=2000)
    tps = [TopicPartition(t, p) for t in (cfg.topics.inference, cfg.topics.feedback)
           for p in sorted(c.partitions_for_topic(t))]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got, t0 = 0, None
    deadline = time.monotonic() + 300
    while got < total and time.monotonic() < deadline:
        batch = c.poll(timeout_ms=200)
        if batch and t0 is None:
            t0 = time.perf_counter()
        for tp, recs in batch.items():
            got += len(recs)
            if decode:
                fn = decode_inference if tp.topic == cfg.topics.inference else decode_feedback
                for r in recs:
                    fn(r.value)
    dt = time.perf_counter() - t0
    c.close()
    return dt


def start_daemon(cfg: Config) -> tuple[Daemon, threading.Event, threading.Thread]:
    """An in-process Daemon on a thread, returned once its partitions are assigned."""
    d = Daemon(cfg, lag_monitor=False)
    stop = threading.Event()
    th = threading.Thread(target=d.run, args=(stop,), daemon=True)
    th.start()
    while not d.assigned_once.is_set():
        time.sleep(0.005)
    return d, stop, th


def daemon_run(cfg: Config, total: int, n_examples: int) -> tuple[float, float]:
    d, stop, th = start_daemon(cfg)
    t0 = time.perf_counter()
    t_input = None
    inputs = {cfg.topics.inference, cfg.topics.feedback}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        consumed = sum(d.metrics.registry.get_sample_value("stopwise_consumed_total", {"topic": t}) or 0
                       for t in inputs)
        if t_input is None and consumed >= total:
            t_input = time.perf_counter() - t0
        if d.processor.learned >= n_examples:
            break
        time.sleep(0.005)
    t_all = time.perf_counter() - t0
    stop.set()
    th.join(60)
    return t_input, t_all


def fresh_outputs(cfg: Config) -> Config:
    """Same input topics, a new group and new output/state topics (a cold daemon)."""
    new = make_cfg(cfg.kafka.bootstrap)
    return new.model_copy(update={"topics": new.topics.model_copy(
        update={"inference": cfg.topics.inference, "feedback": cfg.topics.feedback})})


def _scrape(port: int, names: tuple[str, ...]) -> dict[str, float]:
    out = dict.fromkeys(names, 0.0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        for n in names:
            if line.startswith(n):
                out[n] += float(line.rsplit(" ", 1)[1])
    return out


def process_run(cfg: Config, n_examples: int, instances: int, workdir: Path) -> tuple[float, float, int]:
    """``stopwise run`` x ``instances`` in one group. Returns the seconds from
    the moment every instance is ready (owns its partitions) to every example
    learned, the examples learned before that moment (the first instance
    starts alone and works until the others join), and the partition
    assignments logged."""
    data = json.loads(cfg.model_dump_json())
    data["logging"]["format"] = "json"
    cfile = workdir / f"run{uuid.uuid4().hex[:6]}.yaml"
    cfile.write_text(yaml.safe_dump(data))
    ports = [free_port() for _ in range(instances)]
    procs, logs = [], []
    for i, port in enumerate(ports):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "STOPWISE_"))}
        env |= {"STOPWISE_METRICS__ENABLED": "true", "STOPWISE_METRICS__PORT": str(port)}
        log = open(workdir / f"{cfile.stem}.{i}.log", "wb")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "stopwise.daemon.cli", "run", "--config", str(cfile)],
                                      stdout=log, stderr=log, env=env))
    logfile = [workdir / f"{cfile.stem}.{i}.log" for i in range(instances)]
    name = "stopwise_examples_learned_total"
    t0 = learned0 = None
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a daemon exited: see {workdir}")
            if t0 is None:
                # the window starts once EVERY instance owns its share (the group has formed)
                if all(b"daemon_ready" in f.read_bytes() for f in logfile):
                    t0 = time.perf_counter()
                    learned0 = sum(_scrape(p, (name,))[name] for p in ports)
            else:
                learned = sum(_scrape(p, (name,))[name] for p in ports)
                if learned >= n_examples:
                    break
            time.sleep(0.02)
        dt = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        for log in logs:
            log.close()
    assigned = sum(f.read_bytes().count(b'"partitions_assigned"') for f in logfile)
    return dt, learned0, assigned


def latency(bootstrap: str, seconds: float, rate: float, probe_rate: float, interval: float) -> tuple[list[float], int]:
    cfg = make_cfg(bootstrap, context={"min_support": 0, "max_contexts": 4096}, publish={"interval_s": interval})
    d, stop, th = start_daemon(cfg)
    seen: dict[str, float] = {}
    tail_stop = threading.Event()

    def tail() -> None:
        c = KafkaConsumer(**client_kwargs(cfg), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10)
        tps = [TopicPartition(cfg.topics.thresholds, p) for p in sorted(c.partitions_for_topic(cfg.topics.thresholds))]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        while not tail_stop.is_set():
            for recs in c.poll(timeout_ms=20).values():
                now = time.perf_counter()
                for r in recs:
                    k = r.key.decode()
                    if k not in seen:
                        seen[k] = now
        c.close()

    tailer = threading.Thread(target=tail, daemon=True)
    tailer.start()
    prod = KafkaProducer(**client_kwargs(cfg), acks=1, linger_ms=0)
    rng = random.Random(7)
    sent_at: dict[str, float] = {}
    t_end = time.perf_counter() + seconds
    i = probe_i = 0
    next_probe = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        inf, fb = served_events(rng, i, "l", time.time())
        send(prod, cfg.topics.inference, inf)
        send(prod, cfg.topics.feedback, fb)
        i += 1
        if time.perf_counter() >= next_probe:
            prof = ContextProfile({"task": "probe", "domain": f"p{probe_i}"}, p_correct=0.8, calibration=0.99)
            preq = make_request(rng, prof, f"probe{probe_i}", time.time())
            pinf, pfb = to_events(preq, 1.0, 0.0)
            send(prod, cfg.topics.inference, pinf)
            prod.flush()
            send(prod, cfg.topics.feedback, pfb)
            sent_at[f"task=probe|domain=p{probe_i}"] = time.perf_counter()
            prod.flush()
            probe_i += 1
            next_probe += 1.0 / probe_rate
        time.sleep(max(0.0, 1.0 / rate))
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and not all(k in seen for k in sent_at):
        time.sleep(0.05)
    tail_stop.set()
    stop.set()
    th.join(60)
    tailer.join(10)
    prod.close()
    return [seen[k] - t for k, t in sent_at.items() if k in seen], len(sent_at) - sum(k in seen for k in sent_at)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40000, help="requests pre-filled (2 input records each)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every reader")
    ap.add_argument("--instances", default="1,2", help="comma list: `stopwise run` process counts to time ('' = none)")
    ap.add_argument("--latency-s", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=200.0, help="background requests/s during the latency run")
    ap.add_argument("--probe-rate", type=float, default=4.0)
    ap.add_argument("--interval", type=float, default=0.2, help="publish.interval_s for the latency run")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    instances = [int(x) for x in args.instances.split(",") if x.strip()]

    broker = None
    bootstrap = os.environ.get("STOPWISE_BOOTSTRAP", "").strip()
    if not bootstrap:
        from stopwise.daemon.kafka_broker import LocalBroker
        broker = LocalBroker(Path(tempfile.mkdtemp(prefix="bench-broker-")))
        bootstrap = broker.start(timeout=180)
    workdir = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    tune_gc()   # what `stopwise run` does; the same settings for every reader
    names = ["bare kafka-python consumer (baseline, median of 3 reads per round)", "bare consumer + record decoding/validation only",
             "daemon in-process: input consumed + joined + examples produced",
             "daemon in-process: end to end (examples learned)",
             *[f"`stopwise run` x {k} process(es): end to end" for k in instances]]
    rates: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    rebalances = {k: [] for k in instances}
    try:
        cfg = make_cfg(bootstrap)
        total = prefill(cfg, args.n)
        for r in range(args.rounds):
            # the baseline is short and jumpy: the median of three reads per round
            secs = [statistics.median(bare_consumer(cfg, total) for _ in range(3)),
                    bare_consumer(cfg, total, decode=True)]
            secs += list(daemon_run(fresh_outputs(cfg), total, args.n))
            for k in instances:
                dt, learned0, assigned = process_run(fresh_outputs(cfg), args.n, k, workdir)
                # the same rate unit: input records (2 per request) per second, over the window
                secs.append(dt * args.n / max(1.0, args.n - learned0))
                rebalances[k].append((assigned, int(learned0)))
            for name, sec in zip(names, secs):
                rates[name].append(total / sec)
                ratios[name].append((total / sec) / (total / secs[0]))
            print(f"round {r + 1}: " + ", ".join(f"{total / sec:,.0f}" for sec in secs), flush=True)
        lat, missing = latency(bootstrap, args.latency_s, args.rate, args.probe_rate, args.interval)
    finally:
        if broker is not None:
            broker.stop()

    med = statistics.median
    lines = [
        f"Daemon through the real broker: {args.n} requests = {total} input records (inference + feedback), "
        f"2 partitions each, {args.rounds} interleaved rounds, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        "",
        "| reader | input records/s (median) | ratio to bare consumer (median of rounds) | ratios per round |",
        "|---|---:|---:|---|",
        *[f"| {n} | {med(rates[n]):,.0f} | {med(ratios[n]):.2f} | {' '.join(f'{x:.2f}' for x in ratios[n])} |"
          for n in names],
        "",
        *[f"`stopwise run` x {k}: (partition assignments logged, examples learned before every instance was "
          f"ready) per round: {rebalances[k]}" for k in instances],
        "",
        f"Feedback-to-published-threshold latency: {len(lat)} probes over {args.latency_s:.0f} s, background "
        f"{args.rate:.0f} req/s, publish interval {args.interval} s, {missing} probe(s) never published",
        "",
        "| p50 | p90 | p99 | max |",
        "|---:|---:|---:|---:|",
        (f"| {pct(lat, .5) * 1000:.0f} ms | {pct(lat, .9) * 1000:.0f} ms | {pct(lat, .99) * 1000:.0f} ms "
         f"| {max(lat) * 1000:.0f} ms |") if lat else "| - | - | - | - |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
