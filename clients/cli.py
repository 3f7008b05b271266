"""Client commands: ``stopwise tail``, ``stopwise publish``, ``stopwise inferencer``."""

from __future__ import annotations

import signal
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer


class Kind(str, Enum):
    inference = "inference"
    feedback = "feedback"


def _config(path: Path, signing: bool = False):
    from stopwise.daemon.cliconfig import config_or_exit

    return config_or_exit(path, signing=signing)


def _logging(cfg, quiet: bool = False) -> None:
    from stopwise.daemon.logs import configure_from_config

    configure_from_config(cfg, level="WARNING" if quiet else None)


def _stop_on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def tail_cmd(config: Path, as_json: bool, context: Optional[str], follow: bool, wait: float,
             interval: float, duration: Optional[float], stats_file: Optional[Path]) -> None:
    from rich.live import Live

    from .inferencer import table_from_config
    from .tail import console, follow_json, json_lines, read_stats, select, view

    cfg = _config(config, signing=True)
    _logging(cfg, quiet=True)
    table = table_from_config(cfg).start()
    try:
        if not table.wait_ready(wait):
            typer.echo(f"error: could not read topic {cfg.topics.thresholds!r} from {cfg.kafka.bootstrap} "
                       f"within {wait:g}s (broker down or topic missing?)", err=True)
            raise typer.Exit(1)
        if not follow:
            now = time.time()
            recs = select(table.table, context)
            if as_json:
                for line in json_lines(recs, now):
                    typer.echo(line)
            else:
                console().print(view(recs, now, rejected=table.rejected, stats=read_stats(stats_file), context=context))
            return
        stop = threading.Event()
        _stop_on_signals(stop)
        end = time.monotonic() + duration if duration else float("inf")

        def done() -> bool:
            return stop.is_set() or time.monotonic() >= end

        if as_json:
            follow_json(lambda: table.table, context, typer.echo, until=done, interval_s=interval)
            return
        with Live(console=console(), refresh_per_second=4, screen=False) as live:
            while True:
                live.update(view(select(table.table, context), time.time(), rejected=table.rejected,
                                 stats=read_stats(stats_file), context=context))
                if done():
                    break
                stop.wait(interval)
    finally:
        table.stop()


def publish_cmd(config: Path, kind: Kind, source: str, timeout: float) -> None:
    from .inferencer import publisher_from_config
    from .publish_cmd import publish_lines

    cfg = _config(config)
    _logging(cfg, quiet=True)
    if source == "-":
        stream = sys.stdin
    else:
        try:
            stream = open(source, encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            typer.echo(f"error: cannot read {source}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None
    pub = publisher_from_config(cfg, queue_size=20_000)
    try:
        rep = publish_lines(stream, kind.value, pub, max_bytes=cfg.limits.max_record_bytes,
                            max_checkpoints=cfg.limits.max_checkpoints, flush_timeout=timeout)
    finally:
        rep_undelivered = pub.close(timeout)
        if stream is not sys.stdin:
            stream.close()
    for n, reason, detail in rep.rejected:
        typer.echo(f"line {n}: rejected: {reason}: {detail}", err=True)
    typer.echo(f"{kind.value}: sent {pub.sent}, rejected {len(rep.rejected)}, undelivered {rep_undelivered} "
               f"(lines read {rep.lines})")
    if rep.rejected or rep_undelivered or pub.failed:
        raise typer.Exit(1)


def inferencer_cmd(config: Path, workers: int, rate: float, duration: float, feedback_delay: float,
                   feedback_missing: float, stats_file: Optional[Path], seed: int, progress: float) -> None:
    from .inferencer import Fleet
    from .tail import console, fleet_table

    cfg = _config(config, signing=True)
    _logging(cfg)
    stop = threading.Event()
    _stop_on_signals(stop)
    last = [time.monotonic()]

    def tick(fleet: Fleet) -> None:
        if progress > 0 and time.monotonic() - last[0] >= progress:
            last[0] = time.monotonic()
            a = fleet.stats.summary()["all"]
            typer.echo(f"served {a['requests']} tokens/full {a['token_ratio']:.3f} "
                       f"EM {a['em']:.3f} (full {a['em_full']:.3f}) dropped {fleet.publisher.dropped}", err=True)

    fleet = Fleet(cfg, workers=workers, rate=rate, seed=seed, feedback_delay=feedback_delay,
                  feedback_missing=feedback_missing, stats_file=stats_file, stats_interval_s=1.0)
    result = fleet.run(duration, stop_event=stop, on_tick=tick)
    console().print(fleet_table(result))
    typer.echo(f"errors {result['errors']}, publisher dropped {result['dropped']}, undelivered {result['undelivered']}, "
               f"table rejected {result['table_rejected']}")


def register(app: typer.Typer) -> None:
    @app.command("tail")
    def tail(
        config: Path = typer.Option(..., "--config", "-c", help="YAML config file"),
        as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
        context: Optional[str] = typer.Option(None, "--context", help="only contexts whose key contains this"),
        follow: bool = typer.Option(False, "--follow", "-f", help="keep running and show changes live"),
        wait: float = typer.Option(30.0, "--wait", help="seconds to wait for the topic to be read"),
        interval: float = typer.Option(1.0, "--interval", help="refresh interval with --follow (s)"),
        duration: Optional[float] = typer.Option(None, "--duration", help="stop following after this many seconds"),
        stats_file: Optional[Path] = typer.Option(None, "--stats-file", help="also show an inferencer fleet's stats file"),
    ) -> None:
        """Show the published threshold per context (threshold, explore rate, version, age, estimates, reason)."""
        tail_cmd(config, as_json, context, follow, wait, interval, duration, stats_file)

    @app.command("publish")
    def publish(
        source: str = typer.Argument("-", help="JSONL file, or - for stdin"),
        config: Path = typer.Option(..., "--config", "-c", help="YAML config file"),
        kind: Kind = typer.Option(Kind.inference, "--kind", help="record type of every line"),
        timeout: float = typer.Option(30.0, "--timeout", help="seconds to wait for delivery"),
    ) -> None:
        """Validate records from a JSONL file (or stdin) and send them; report sent and rejected lines (exit 1 if any)."""
        publish_cmd(config, kind, source, timeout)

    @app.command("inferencer")
    def inferencer(
        config: Path = typer.Option(..., "--config", "-c", help="YAML config file"),
        workers: int = typer.Option(4, "--workers", min=1, help="worker threads"),
        rate: float = typer.Option(100.0, "--rate", min=0.001, help="target total requests per second"),
        duration: float = typer.Option(60.0, "--duration", min=0.0, help="seconds to run (Ctrl-C stops early)"),
        feedback_delay: float = typer.Option(2.0, "--feedback-delay", min=0.0, help="mean feedback delay (s)"),
        feedback_missing: float = typer.Option(0.0, "--feedback-missing", min=0.0, max=1.0, help="fraction of requests without feedback"),
        stats_file: Optional[Path] = typer.Option(None, "--stats-file", help="write per-context stats (JSON) here, refreshed every second"),
        seed: int = typer.Option(0, "--seed", help="request stream seed"),
        progress: float = typer.Option(5.0, "--progress", help="progress line every N seconds on stderr (0 = off)"),
    ) -> None:
        """Run the reference ONNX anytime-model fleet (digits) with the published thresholds and feedback."""
        inferencer_cmd(config, workers, rate, duration, feedback_delay, feedback_missing, stats_file, seed, progress)
