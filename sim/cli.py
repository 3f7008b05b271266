"""Simulator commands: ``stopwise simulate``, ``stopwise worlds generate``,
``stopwise report``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

worlds_app = typer.Typer(help="World files for the closed-loop simulator.", no_args_is_help=True)


def _fail(msg: str) -> None:
    typer.echo(msg, err=True)
    raise typer.Exit(1)


def simulate(
    world: Path = typer.Option(..., "--world", help="world file (JSONL, one request per line)"),
    config: Optional[Path] = typer.Option(None, "--config", help="daemon config YAML (budget, grid, policy, guardrails...)"),
    policy: Optional[List[str]] = typer.Option(None, "--policy", help="policy or alias (none, static-<tau>, offline, naive, reference, ...); repeat to compare"),
    publish_delay: float = typer.Option(1.0, "--publish-delay", help="seconds of event time before a published record is visible"),
    window: int = typer.Option(1000, "--window", min=1, help="requests of a context per scoring/oracle window"),
    out: Path = typer.Option(..., "--out", help="output folder (DIR/<policy>/ when several policies)"),
) -> None:
    """Replay a world closed-loop through the daemon core (no Kafka) and score it against the hindsight oracle."""
    from stopwise.daemon.config import load_config, parse_config
    from stopwise.daemon.errors import ConfigError

    from .oracle import compute_oracle
    from .simulator import SimulationError, simulate as run, write_run
    from .summary import pct, summarize
    from .world import read_meta, read_world

    try:
        cfg = load_config(config, env=os.environ) if config else parse_config({}, env=os.environ)
    except ConfigError as exc:
        _fail(f"invalid config: {exc}")
    try:
        reqs, errors = read_world(world, collect=True)
    except Exception as exc:  # WorldError for an unreadable file
        _fail(str(exc))
    if errors:
        for e in errors[:50]:
            typer.echo(str(e), err=True)
        if len(errors) > 50:
            typer.echo(f"... and {len(errors) - 50} more bad lines", err=True)
        raise typer.Exit(1)
    if not reqs:
        _fail(f"{world}: no requests")
    meta = read_meta(world)
    policies = list(policy or [cfg.policy.name])
    if len(set(policies)) != len(policies):
        _fail("each --policy may be given once")
    oracle = compute_oracle(reqs, cfg, window=window)
    odict = oracle.to_dict()
    typer.echo(f"world {world}: {len(reqs)} requests, {len(oracle.windows)} contexts; oracle saves "
               f"{oracle.saved()} tokens ({window}-request windows)")
    typer.echo("| policy | savings | of oracle | EM drop (pts) | windows over budget | req/s |")
    typer.echo("|---|---|---|---|---|---|")
    for name in policies:
        dest = out / name if len(policies) > 1 else out
        try:
            res = run(reqs, cfg, name, publish_delay=publish_delay)
        except SimulationError as exc:
            _fail(str(exc))
        summary = summarize(res.outcomes, oracle, cfg, window=window, policy=name, meta=meta, requests=reqs)
        write_run(res, dest, summary, odict)
        o = summary["overall"]
        typer.echo(f"| {name} | {pct(o['savings'])} | {pct(o['fraction_of_oracle'])} | {100 * o['em_drop']:.2f} | "
                   f"{o['windows_over_budget']}/{o['windows']} | {res.rate:,.0f} |")
    typer.echo(f"wrote {out}")


def generate(
    scenario: str = typer.Option(..., "--scenario", help="scenario name (see the error for the list)"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same world)"),
    n: int = typer.Option(10_000, "--n", min=1, help="number of requests"),
    out: Path = typer.Option(..., "--out", help="world file to write (plus FILE.meta.json)"),
) -> None:
    """Generate a scenario world file (JSONL) and its FILE.meta.json sidecar."""
    from .scenarios import generate_world

    try:
        count, meta = generate_world(scenario, seed=seed, n=n, out=out)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {out}: {count} requests, scenario {scenario}, seed {seed}"
               + (f", events {json.dumps(meta['events'])}" if meta.get("events") else ""))


def report(directory: Path = typer.Argument(..., help="a run folder (summary.json) or a folder of runs")) -> None:
    """Write PNG plots and report.md for simulated runs."""
    from .report import make_report

    try:
        files = make_report(directory)
    except FileNotFoundError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {len(files)} files under {directory}")


def register(app: typer.Typer) -> None:
    """Add the simulator commands to the ``stopwise`` app."""
    app.command("simulate")(simulate)
    app.command("report")(report)
    worlds_app.command("generate")(generate)
    app.add_typer(worlds_app, name="worlds")
